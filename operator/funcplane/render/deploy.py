"""Spec is a deployment request: turn slot specs + recorded status into pointers and instance content.

A slot's spec content (code + settings) is deployed to the instance that slot points to, only when
its hash differs from the hash recorded at the last deployment. Swaps (a separate engine) move
pointers in status without touching specs, so re-applying unchanged manifests changes nothing here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from funcplane.api import PRODUCTION
from funcplane.api.conditions import Reason
from funcplane.api.functionapp import DeployedContent, FunctionAppSpec, FunctionAppStatus, InstanceStatus, SlotPointer
from funcplane.api.slot import Slot

from . import names
from .content import content_hash


@dataclass(frozen=True)
class SlotRequest:
    """One admitted slot as the deployer sees it."""

    name: str
    owner_uid: str  # uid of the FunctionApp (production) or of the Slot object
    content: DeployedContent


@dataclass
class SlotDeploy:
    """Content of `slot` deployed to `instance` (a new one, or the one the slot points to)."""

    slot: str
    instance: str
    content_hash: str
    new_instance: bool


@dataclass
class DeployPlan:
    status: FunctionAppStatus
    deployments: list[SlotDeploy] = field(default_factory=list)
    removed_instances: list[str] = field(default_factory=list)


def plan_deployments(app_name: str, namespace: str, status: FunctionAppStatus,
                     slots: list[SlotRequest]) -> DeployPlan:
    """New pointers/instances for every slot; content changes go to the instance a slot points to.
    Instances no slot points to any more (deleted slots) are dropped."""
    result = status.model_copy(deep=True)
    plan = DeployPlan(result)
    wanted = {slot.name for slot in slots}
    for slot_name in [name for name in result.slots if name not in wanted]:
        del result.slots[slot_name]
    taken = set(result.instances) | {pointer.instance for pointer in result.slots.values()}
    for slot in slots:
        digest = content_hash(slot.content)
        pointer = result.slots.get(slot.name)
        if pointer is None:
            instance = names.instance_id(app_name, slot.owner_uid, taken)
            taken.add(instance)
            pointer = SlotPointer(instance=instance, deployed_hash="", service=names.slot_service(app_name, slot.name),
                                  hostname=names.hostname(app_name, slot.name, namespace))
            result.slots[slot.name] = pointer
            plan.deployments.append(SlotDeploy(slot.name, instance, digest, True))
        elif pointer.deployed_hash != digest:
            plan.deployments.append(SlotDeploy(slot.name, pointer.instance, digest, False))
        else:
            result.instances.setdefault(pointer.instance, InstanceStatus(
                content=slot.content, content_hash=digest, deployed_from=slot.name))
            continue
        pointer.deployed_hash = digest
        previous = result.instances.get(pointer.instance, InstanceStatus())
        result.instances[pointer.instance] = previous.model_copy(update={
            "content": slot.content, "content_hash": digest, "deployed_from": slot.name})
    live = {pointer.instance for pointer in result.slots.values()}
    for instance in [i for i in result.instances if i not in live]:
        del result.instances[instance]
        plan.removed_instances.append(instance)
    result.slot_count = len(result.slots)
    production = result.slots.get(PRODUCTION)
    result.active_instance = production.instance if production else None
    if production:
        result.selector = names.selector_string(names.instance_selector(app_name, production.instance))
        result.hostname = production.hostname
    return plan


@dataclass(frozen=True)
class Admission:
    admitted: list[Slot]
    refused: dict[str, tuple[str, str]]  # Slot object name -> (reason, message)


def admit_slots(app_name: str, spec: FunctionAppSpec, slots: list[Slot]) -> Admission:
    """Apply the plan's slot limit (production included) and slot-name uniqueness. The oldest
    slots win, so adding a slot over the limit never disturbs the slots already running."""
    limit = spec.slot_limit_total() - 1
    ordered = sorted(slots, key=lambda s: (s.metadata.get("creationTimestamp", ""), s.metadata.get("name", "")))
    admitted: list[Slot] = []
    refused: dict[str, tuple[str, str]] = {}
    seen: dict[str, str] = {}
    for slot in ordered:
        name = slot.metadata["name"]
        if slot.spec.slot_name in seen:
            refused[name] = (Reason.DUPLICATE_SLOT_NAME, f"slot name {slot.spec.slot_name!r} of app {app_name!r} is "
                             f"already used by Slot {seen[slot.spec.slot_name]!r}; choose another spec.slotName")
        elif len(admitted) >= limit:
            refused[name] = (Reason.SLOT_LIMIT_EXCEEDED, f"plan {spec.plan!r} allows {limit + 1} slots including "
                             f"production; app {app_name!r} already has them. Delete a slot or change the plan")
        else:
            admitted.append(slot)
            seen[slot.spec.slot_name] = name
    return Admission(admitted, refused)
