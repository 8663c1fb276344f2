"""`kubectl funcplane swap|complete|cancel|rollback|status`: request slot swaps and follow them.

A swap is declarative: these commands write the source Slot's spec.swap (a fresh requestId for a
new request) and read the app's swap journal, which the operator keeps.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from datetime import datetime, timezone
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from funcplane.api.base import GROUP, VERSION
from funcplane.swap.engine import ANNOTATION_REQUESTED_BY
from funcplane.swap.journal import SwapJournal, SwapRecord
from funcplane.swap.store import journal_name, parse

FIELD_MANAGER = "kubectl-funcplane"
POLL_SECONDS = 0.5
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class SwapCommandError(Exception):
    """A problem the user can fix; printed without a traceback."""


class Cluster:
    def __init__(self, kubeconfig: str | None, context: str | None, namespace: str | None) -> None:
        contexts, current = config.list_kube_config_contexts(config_file=kubeconfig)
        chosen = next((c for c in contexts if c["name"] == context), current) if context else current
        self.namespace = namespace or (chosen or {}).get("context", {}).get("namespace") or "default"
        self.user = (chosen or {}).get("context", {}).get("user") or "unknown"
        api = config.new_client_from_config(config_file=kubeconfig, context=context)
        self.custom, self.core = client.CustomObjectsApi(api), client.CoreV1Api(api)

    def slot(self, app: str, slot_name: str) -> dict[str, Any]:
        slots = self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, "slots")["items"]
        for slot in slots:
            if slot["spec"].get("appRef") == app and slot["spec"].get("slotName") == slot_name:
                return slot
        known = sorted(s["spec"].get("slotName") for s in slots if s["spec"].get("appRef") == app)
        raise SwapCommandError(f"app {app!r} has no slot {slot_name!r} in namespace {self.namespace!r} "
                               f"(its slots: {', '.join(known) or 'none'}); check --slot and --namespace")

    def request(self, slot: dict[str, Any], swap: dict[str, Any]) -> None:
        patch = {"metadata": {"annotations": {ANNOTATION_REQUESTED_BY: self.user}}, "spec": {"swap": swap}}
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, "slots",
                                                   slot["metadata"]["name"], patch, field_manager=FIELD_MANAGER,
                                                   _content_type="application/merge-patch+json")

    def journal(self, app: str) -> SwapJournal:
        try:
            return parse(self.core.read_namespaced_config_map(journal_name(app), self.namespace).to_dict())
        except ApiException as error:
            if error.status == 404:
                return SwapJournal()
            raise


def _when(seconds: float | None) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if seconds else "-"


def describe(record: SwapRecord) -> str:
    state = record.phase or record.result
    lines = [f"swap {record.request_id}: {record.source} -> {record.target} ({record.mode}, {record.trigger}, "
             f"by {record.requested_by}): {state}" + (f" - {record.message}" if record.message else "")]
    for pod in record.pods:
        answer = f"warm-up {pod.status}" if pod.status is not None else "no warm-up answer"
        detail = f" - {pod.message}" if pod.message and not pod.warm else ""
        lines.append(f"  pod {pod.pod} ({pod.ip or 'no IP'}): {'Ready' if pod.ready else 'not Ready'}, "
                     f"{'warm' if pod.warm else answer}{detail}")
    if record.durations:
        lines.append("  phases: " + ", ".join(f"{phase} {seconds:.1f}s" for phase, seconds in record.durations.items()))
    return "\n".join(lines)


def follow(cluster: Cluster, app: str, source: str, request_id: str, action: str, timeout: float) -> int:
    """Print each change of the request's record until it ends (or waits for a preview decision)."""
    deadline, shown = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        journal, record = cluster.journal(app), None
        if f"{source}/{request_id}/{action}" in journal.handled:
            # A refusal of this action, else the swap the request runs (complete/cancel act on it).
            record = journal.find(source, request_id, action) or journal.find(source, request_id)
        text = describe(record) if record else f"swap {request_id}: waiting for the operator to take the {action}"
        if text != shown:
            print(text, flush=True)
            shown = text
        if record is not None and record.result != "Running":
            return EXIT_OK if record.result in ("Succeeded", "Cancelled") else EXIT_FAILED
        if record is not None and record.phase == "AwaitingCompletion":
            print(f"preview ready: test slot {source!r}, then `complete` or `cancel` it", flush=True)
            return EXIT_OK
        time.sleep(POLL_SECONDS)
    print(f"swap {request_id} still running after {timeout:.0f}s; follow it with `status`", file=sys.stderr)
    return EXIT_FAILED


def _start(args: argparse.Namespace, cluster: Cluster, action: str) -> int:
    slot = cluster.slot(args.app, args.slot)
    current = slot["spec"].get("swap") or {}
    if action in ("complete", "cancel"):
        if not current.get("requestId"):
            raise SwapCommandError(f"slot {args.slot!r} has no swap request to {action}; start one with `swap`")
        swap = dict(current, action=action)
    else:
        swap = {"requestId": args.request_id or f"{action}-{uuid.uuid4().hex[:10]}", "action": action,
                "target": getattr(args, "target", None) or current.get("target", "production"),
                "mode": "preview" if getattr(args, "preview", False) else "full"}
    cluster.request(slot, swap)
    print(f"requested {action} of swap {swap['requestId']} on slot {args.slot!r} of app {args.app!r}", flush=True)
    if args.wait:
        return follow(cluster, args.app, args.slot, swap["requestId"], action, args.timeout)
    return EXIT_OK


def _status(args: argparse.Namespace, cluster: Cluster) -> int:
    journal = cluster.journal(args.app)
    print(describe(journal.current) if journal.current else f"app {args.app!r}: no swap in progress")
    if journal.history:
        print(f"\n{'REQUEST':<24} {'FROM':<12} {'TO':<12} {'RESULT':<10} {'BY':<20} {'STARTED (UTC)':<20} PHASES")
        for record in journal.history:
            phases = " ".join(f"{p}={s:.1f}s" for p, s in record.durations.items())
            print(f"{record.request_id:<24} {record.source:<12} {record.target:<12} {record.result:<10} "
                  f"{record.requested_by[:20]:<20} {_when(record.started_at):<20} {phases}")
            if record.result in ("Failed", "Refused"):
                print(f"  reason: {record.message}")
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    try:
        # Global flags live on the top-level parser (cli.main); a parser without them means "not given".
        cluster = Cluster(*(getattr(args, flag, None) for flag in ("kubeconfig", "context", "namespace")))
        if args.swap_command == "status":
            return _status(args, cluster)
        return _start(args, cluster, {"swap": "start"}.get(args.swap_command, args.swap_command))
    except SwapCommandError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except ApiException as error:
        print(f"error: the API server answered {error.status} {error.reason}: {error.body}", file=sys.stderr)
        return EXIT_FAILED


def register(subparsers: argparse._SubParsersAction) -> None:
    def common(parser: argparse.ArgumentParser, needs_slot: bool = True) -> None:
        parser.add_argument("app", help="FunctionApp name")
        if needs_slot:
            parser.add_argument("--slot", required=True, help="the source slot (e.g. staging)")
            parser.add_argument("--wait", action="store_true", help="follow the swap until it ends")
            parser.add_argument("--timeout", type=float, default=900.0, help="seconds --wait follows at most")
        # Also accepted before the subcommand (see cli.main): SUPPRESS keeps a value given there.
        parser.add_argument("-n", "--namespace", default=argparse.SUPPRESS,
                            help="namespace (default: the kubeconfig context's)")
        parser.add_argument("--kubeconfig", default=argparse.SUPPRESS,
                            help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
        parser.add_argument("--context", default=argparse.SUPPRESS, help="kubeconfig context")
        parser.set_defaults(handler=run)

    swap = subparsers.add_parser("swap", help="swap a slot into another (production by default)")
    common(swap)
    swap.add_argument("--target", default="production", help="target slot (default: production)")
    swap.add_argument("--preview", action="store_true",
                      help="stop once the source is warm with the target's settings; then complete or cancel")
    swap.add_argument("--request-id", help="request id (default: a fresh one); a handled id never runs again")
    swap.set_defaults(swap_command="swap")
    for name, help_text in (("complete", "flip a preview swap that is waiting"),
                            ("cancel", "cancel a swap before its flip and restore the source's settings"),
                            ("rollback", "swap back the slot's last swap")):
        parser = subparsers.add_parser(name, help=help_text)
        common(parser)
        if name == "rollback":
            parser.add_argument("--request-id", help="request id (default: a fresh one)")
        parser.set_defaults(swap_command=name)
    status = subparsers.add_parser("status", help="the app's swap in progress and its last swaps")
    common(status, needs_slot=False)
    status.set_defaults(swap_command="status")
