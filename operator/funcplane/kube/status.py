"""The one status writer: diff against the stored status, patch, and an Event per transition.

Every status the operator writes goes through `write_status`, so a status that did not change
costs no API call, the store sees each write's response at once, and a condition's change is
announced the same way on every resource.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from funcplane.api.conditions import ConditionedStatus, is_bad

from .client import Kube
from .store import Store


async def write_status(kube: Kube, store: Store, body: dict[str, Any], status: ConditionedStatus, *,
                       patch: dict[str, Any] | None = None, locked: bool = False,
                       announce: Iterable[str] = ()) -> dict[str, Any] | None:
    """Make `status` the status of `body` (the object as last read), unless it already is.

    The write is `status.status_patch(before)`, or `patch` for a writer that owns only some fields.
    With `locked` it carries body's resourceVersion, so a concurrent change fails it (`Conflict`)
    instead of being overwritten. Each condition of the `announce` types that took a new status
    or reason becomes an Event on the object, a Warning when it reports a problem. Returns the
    stored object, or None when nothing was written."""
    before = type(status).model_validate(body.get("status") or {})
    if status.wire() == before.wire():
        return None
    meta = body["metadata"]
    stored = await kube.patch_status(body["kind"], meta["namespace"], meta["name"],
                                     status.status_patch(before) if patch is None else patch,
                                     resource_version=meta["resourceVersion"] if locked else None)
    if stored:
        stored.setdefault("kind", body["kind"])
        store.put(stored)
    for condition in status.transitions(before, announce):
        await kube.event(body, condition.reason, condition.message, warning=is_bad(condition))
    return stored


def merged(document: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """`document` with a JSON merge patch applied (RFC 7386): what the API server will store."""
    result = dict(document)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            result[key] = merged(result.get(key) if isinstance(result.get(key), dict) else {}, value)
        else:
            result[key] = value
    return result
