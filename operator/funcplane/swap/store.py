"""The per-app swap journal, kept in a ConfigMap `<app>-swap-journal` that only the engine writes.

Writes carry the resourceVersion read, so a stale engine (an old leader) can never overwrite a
newer record. The ConfigMap is owned by the FunctionApp (deleted with it) and carries none of the labels of
rendered objects, so the app reconciler neither watches nor prunes it.
"""

from __future__ import annotations

import json
from typing import Any

from funcplane.kube.client import KINDS, Conflict, Kube
from funcplane.render import names

from .journal import SwapJournal

DATA_KEY = "journal.json"
LABEL_JOURNAL = "funcplane.io/swap-journal"


def journal_name(app: str) -> str:
    return f"{app}-swap-journal"


def parse(config_map: dict[str, Any] | None) -> SwapJournal:
    text = ((config_map or {}).get("data") or {}).get(DATA_KEY)
    return SwapJournal.model_validate(json.loads(text)) if text else SwapJournal()


class JournalStore:
    """Journals by (namespace, app), cached with the resourceVersion they were read at."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self._cache: dict[tuple[str, str], tuple[SwapJournal, str | None]] = {}

    def cached(self, namespace: str, app: str) -> SwapJournal | None:
        entry = self._cache.get((namespace, app))
        return entry[0] if entry else None

    async def load(self, namespace: str, app: str) -> SwapJournal:
        entry = self._cache.get((namespace, app))
        if entry is None:
            body = await self.kube.get("ConfigMap", namespace, journal_name(app))
            entry = (parse(body), body["metadata"]["resourceVersion"] if body else None)
            self._cache[(namespace, app)] = entry
        return entry[0].model_copy(deep=True)

    async def save(self, app_body: dict[str, Any], journal: SwapJournal) -> None:
        namespace, app = app_body["metadata"]["namespace"], app_body["metadata"]["name"]
        _, version = self._cache.get((namespace, app), (None, None))
        manifest: dict[str, Any] = {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": journal_name(app), "namespace": namespace,
                         "labels": {LABEL_JOURNAL: app},
                         "ownerReferences": [names.owner_reference(app_body | {"kind": "FunctionApp"})]},
            "data": {DATA_KEY: json.dumps(journal.wire(), sort_keys=True)},
        }
        try:
            if version is None:
                stored = await self.kube.create(manifest)
                if stored is None:  # someone created it meanwhile: re-read before deciding anything
                    raise Conflict(f"{journal_name(app)} already exists")
            else:
                manifest["metadata"]["resourceVersion"] = version
                stored = await self.kube.call("PUT", KINDS["ConfigMap"].path(namespace, journal_name(app)),
                                              body=manifest)
                if stored is None:
                    raise Conflict(f"{journal_name(app)} was deleted")
        except Conflict:
            self._cache.pop((namespace, app), None)
            raise
        self._cache[(namespace, app)] = (journal.model_copy(deep=True), stored["metadata"]["resourceVersion"])

    def forget(self, namespace: str, app: str) -> None:
        self._cache.pop((namespace, app), None)
