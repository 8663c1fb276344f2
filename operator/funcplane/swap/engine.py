"""One app's swap tick: take requests, write the phase's layout, observe, advance, record.

Order matters for resuming: a phase is saved in the journal before the layout it asks for is
written to the app's status, and a swap ends (leaves the journal's `current`) only after its final
layout was observed. Whatever process runs the next tick finds the intent and converges to it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from pydantic import ValidationError

from funcplane.api import PRODUCTION
from funcplane.api.functionapp import FunctionApp, FunctionAppStatus
from funcplane.api.slot import Slot, SlotStatus, SwapStatus
from funcplane.kube.client import Kube
from funcplane.kube.status import merged, write_status
from funcplane.kube.store import Store
from funcplane.render import names
from funcplane.render.volumes import VolumeMode

from . import observe
from .journal import SwapJournal, SwapRecord
from .machine import Layout, Notice, Request, World, advance, auto_swap_request, changes, intake
from .store import JournalStore

logger = logging.getLogger("funcplane.swap")

ANNOTATION_REQUESTED_BY = "funcplane.io/swap-requested-by"
MAX_PHASES_PER_TICK = 6


class SwapServices(Protocol):
    """What the engine needs from whoever runs it (the reconcilers' context), and nothing more."""

    kube: Kube
    store: Store

    async def volume_mode(self) -> VolumeMode: ...

    def queue_app(self, namespace: str, name: str) -> None: ...


def layout_of(status: FunctionAppStatus) -> Layout:
    return Layout({slot: pointer.instance for slot, pointer in status.slots.items()},
                  {instance: record.sticky_settings_from for instance, record in status.instances.items()})


def requested_by(slot_body: dict[str, Any]) -> str:
    """Who asked: the CLI's annotation, else the field manager that last wrote spec.swap."""
    meta = slot_body["metadata"]
    if meta.get("annotations", {}).get(ANNOTATION_REQUESTED_BY):
        return meta["annotations"][ANNOTATION_REQUESTED_BY]
    for entry in meta.get("managedFields") or []:
        if "f:swap" in (entry.get("fieldsV1") or {}).get("f:spec", {}):
            return entry.get("manager", "unknown")
    return "unknown"


def request_of(slot_body: dict[str, Any]) -> Request | None:
    spec = slot_body.get("spec", {})
    swap = spec.get("swap")
    if not swap or not swap.get("requestId"):
        return None
    return Request(source=spec["slotName"], request_id=swap["requestId"], target=swap.get("target", PRODUCTION),
                   mode=swap.get("mode", "full"), action=swap.get("action", "start"),
                   requested_by=requested_by(slot_body))


def slots_of(bodies: list[dict[str, Any]], app: str) -> list[dict[str, Any]]:
    """The app's live Slots, oldest first (requests are taken in that order)."""
    return sorted((s for s in bodies
                   if s.get("spec", {}).get("appRef") == app and not s["metadata"].get("deletionTimestamp")),
                  key=lambda s: (s["metadata"].get("creationTimestamp", ""), s["metadata"]["name"]))


def latest_record(journal: SwapJournal, slot: str) -> SwapRecord | None:
    if journal.current is not None and journal.current.source == slot:
        return journal.current
    return next((r for r in journal.history if r.source == slot), None)


def status_of(record: SwapRecord) -> dict[str, Any]:
    """The Slot's status.swap summary: request, phase (or result once finished), reason."""
    return {"requestId": record.request_id, "phase": record.phase or record.result, "message": record.message}


class SwapEngine:
    def __init__(self, ctx: SwapServices, clock: Callable[[], float] = time.time) -> None:
        self.ctx = ctx
        self.kube = ctx.kube
        self.journals = JournalStore(ctx.kube)
        self.clock = clock

    # ---- cheap check from watched state (no API calls) -------------------------------------
    def has_work(self, namespace: str, app: str) -> bool:
        journal = self.journals.cached(namespace, app)
        if journal is None or journal.current is not None:
            return True
        app_body = self.ctx.store.get("FunctionApp", namespace, app) or {}
        pointers = (app_body.get("status") or {}).get("slots") or {}
        for slot_body in slots_of(self.ctx.store.list("Slot", namespace), app):
            spec, slot = slot_body.get("spec", {}), slot_body.get("spec", {}).get("slotName")
            request = request_of(slot_body)
            if request is not None and request.handled_key not in journal.handled:
                return True
            auto = spec.get("autoSwapTarget")
            deployed = (pointers.get(slot) or {}).get("deployedHash")
            if auto and spec.get("code") and deployed and journal.auto_swapped.get(slot) != deployed:
                return True
            record = latest_record(journal, slot)
            if record is not None and (slot_body.get("status") or {}).get("swap") != status_of(record):
                return True
        return False

    # ---- one tick -----------------------------------------------------------------------------
    async def tick(self, namespace: str, app_name: str) -> None:
        body = await self.kube.get("FunctionApp", namespace, app_name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            self.journals.forget(namespace, app_name)
            return
        body.setdefault("kind", "FunctionApp")
        slot_bodies = slots_of(await self.kube.list("Slot", namespace), app_name)
        try:
            app = FunctionApp.model_validate(body)
            slots = [Slot.model_validate(s) for s in slot_bodies]
        except ValidationError as error:
            logger.warning("swap engine skips app %s/%s: %s", namespace, app_name, error)
            return
        journal = await self.journals.load(namespace, app_name)
        journal = await self._take_requests(body, app, slot_bodies, journal)
        for _ in range(MAX_PHASES_PER_TICK):
            record = journal.current
            if record is None:
                break
            delta = changes(record, layout_of(app.status))
            if delta.pointers or delta.sticky:
                body = await self._write_layout(body, delta)
                app = FunctionApp.model_validate(body)
            world = await self._observe(app, slots, record)
            advanced, notices = advance(journal, world, self.clock())
            if advanced.wire() == journal.wire():
                break
            await self.journals.save(body, advanced)
            journal = advanced
            await self._announce(body, slot_bodies, record.source, notices)
        await self._mirror(slot_bodies, journal)

    async def _take_requests(self, body: dict[str, Any], app: FunctionApp, slot_bodies: list[dict[str, Any]],
                             journal: SwapJournal) -> SwapJournal:
        layout = layout_of(app.status)
        before = journal.wire()
        notices: list[tuple[str, Notice]] = []
        for slot_body in slot_bodies:
            request = request_of(slot_body)
            if request is not None:
                journal, notice = intake(journal, request, layout, self.clock())
                if notice:
                    notices.append((request.source, notice))
        for slot_body in slot_bodies:
            spec = slot_body["spec"]
            pointer = app.status.slots.get(spec["slotName"])
            if not spec.get("autoSwapTarget") or not spec.get("code") or pointer is None:
                continue
            request = auto_swap_request(journal, spec["slotName"], spec["autoSwapTarget"].get("target", PRODUCTION),
                                        pointer.deployed_hash)
            if request is not None:
                journal, notice = intake(journal, request, layout, self.clock())
                journal.auto_swapped[request.source] = pointer.deployed_hash
                if notice:
                    notices.append((request.source, notice))
        if journal.wire() != before:
            await self.journals.save(body, journal)
            for source, notice in notices:
                await self._announce(body, slot_bodies, source, [notice])
        return journal

    async def _write_layout(self, body: dict[str, Any], delta: Layout) -> dict[str, Any]:
        """One status write for the whole change: both pointers move together, never one at a time."""
        meta = body["metadata"]
        app_name = meta["name"]
        patch: dict[str, Any] = {}
        if delta.pointers:
            patch["slots"] = {slot: {"instance": instance} for slot, instance in delta.pointers.items()}
            if PRODUCTION in delta.pointers:
                production = delta.pointers[PRODUCTION]
                patch["activeInstance"] = production
                patch["selector"] = names.selector_string(names.instance_selector(app_name, production))
        if delta.sticky:
            patch["instances"] = {instance: {"stickySettingsFrom": source} for instance, source in delta.sticky.items()}
        layout = FunctionAppStatus.model_validate(merged(body.get("status") or {}, patch))
        stored = await write_status(self.kube, self.ctx.store, body, layout, patch=patch, locked=True)
        assert stored is not None, f"FunctionApp {app_name} disappeared"
        logger.info("swap layout of %s/%s: %s", meta["namespace"], app_name, patch)
        # The reconciler's view is current (the writer stored the response): have it render the layout now.
        self.ctx.queue_app(meta["namespace"], app_name)
        return stored

    async def _observe(self, app: FunctionApp, slots: list[Slot], record: SwapRecord) -> World:
        namespace, app_name = app.metadata["namespace"], app.metadata["name"]
        phase = record.phase
        source_replicas = app.spec.clamped_replicas()
        if app.spec.autoscaled and phase in ("ApplyingTargetSettings", "WarmingUp"):
            source_replicas = await self._match_capacity(namespace, record)
        world = World(layout=layout_of(app.status), timeout_seconds=float(app.spec.warmup.timeout_seconds),
                      source_replicas=source_replicas)
        if phase in ("ApplyingTargetSettings", "ApplyingSourceSettings"):
            instance = record.source_instance if phase == "ApplyingTargetSettings" else record.target_instance
            expected = await observe.expected_deployments(self.kube, app, slots, await self.ctx.volume_mode())
            world.rolled_out[instance] = await observe.rolled_out(self.kube, namespace, app_name, instance,
                                                                  expected.get(instance, {}))
        if phase in ("ApplyingTargetSettings", "WarmingUp"):
            remaining = world.timeout_seconds - (self.clock() - record.started_at)
            world.source_pods.extend(await observe.source_pods(
                self.kube, namespace, app_name, record.source_instance,
                warmup=app.spec.warmup if phase == "WarmingUp" else None, previous=record.pods, remaining=remaining))
        if phase == "Flipping":
            for slot, instance in ((record.target, record.source_instance), (record.source, record.target_instance)):
                world.endpoints[slot] = await observe.ready_endpoints(self.kube, namespace,
                                                                      names.slot_service(app_name, slot))
                pods = await observe.instance_pods(self.kube, namespace, app_name, instance)
                world.instance_ips[instance] = frozenset(p["status"]["podIP"] for p in pods
                                                         if p.get("status", {}).get("podIP"))
        return world

    async def _match_capacity(self, namespace: str, record: SwapRecord) -> int:
        """Autoscaled: the source gets (at least) the replicas the target serves with now, so that
        the flip does not lower the target slot's capacity; the count the warm-up waits for."""
        target = await self.kube.get("Deployment", namespace, record.target_instance)
        source = await self.kube.get("Deployment", namespace, record.source_instance)
        wanted = max(1, int(((target or {}).get("spec") or {}).get("replicas", 1)))
        if source is not None and int((source.get("spec") or {}).get("replicas", 1)) < wanted:
            await self.kube.scale("Deployment", namespace, record.source_instance, wanted)
            logger.info("swap %s: instance %s scaled to %d, the replicas of %s, before the flip",
                        record.request_id, record.source_instance, wanted, record.target_instance)
        return wanted

    async def _announce(self, body: dict[str, Any], slot_bodies: list[dict[str, Any]], source: str,
                        notices: list[Notice]) -> None:
        involved = next((s for s in slot_bodies if s["spec"]["slotName"] == source), body)
        involved.setdefault("kind", "Slot" if involved is not body else "FunctionApp")
        for notice in notices:
            logger.info("%s: %s", notice.reason, notice.message)
            await self.kube.event(involved, notice.reason, notice.message, warning=notice.warning)

    async def _mirror(self, slot_bodies: list[dict[str, Any]], journal: SwapJournal) -> None:
        """Each Slot's status.swap shows its latest swap: phase while running, result and reason after."""
        for slot_body in slot_bodies:
            record = latest_record(journal, slot_body["spec"]["slotName"])
            if record is None or (slot_body.get("status") or {}).get("swap") == status_of(record):
                continue
            status = SlotStatus.model_validate(slot_body.get("status") or {})
            status.swap = SwapStatus.model_validate(status_of(record))
            await write_status(self.kube, self.ctx.store, slot_body, status, patch={"swap": status_of(record)})
