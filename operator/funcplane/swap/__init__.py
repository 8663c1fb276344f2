"""The slot swap: a resumable state machine recorded in a per-app journal.

`journal` holds the records, `machine` the pure transitions (what each phase wants the world to
look like and when it moves on), `observe` and `engine` the I/O that reads pods, Deployments and
EndpointSlices, calls each pod's warm-up endpoint and writes the app's status.
"""
