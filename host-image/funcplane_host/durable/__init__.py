"""Durable Functions for apps written with Microsoft's `azure-functions-durable` SDK.

The host plays the part of Azure's Durable extension: it replays an orchestration's history to
the SDK (history in, actions out), runs activities, timers, external events, sub-orchestrations
and entities, keeps every instance in an embedded SQLite store, and serves the HTTP management
API under /runtime/webhooks/durabletask/. The contract it follows is the legacy out-of-process
JSON protocol the Python SDK speaks over ordinary FunctionRpc invocations.
"""
