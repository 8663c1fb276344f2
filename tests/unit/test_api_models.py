"""API model behaviour that the operator relies on."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from funcplane.api import FunctionAppSpec, SlotSpec
from funcplane.api.workerconfig import WorkerSpec


def app_spec(**extra) -> FunctionAppSpec:
    return FunctionAppSpec.model_validate({"runtime": {"name": "python", "version": "3.12"},
                                           "code": {"configMap": {"name": "code"}}, **extra})


@pytest.mark.parametrize("plan, slot_limit, expected", [
    ("consumption", None, 2), ("premium", None, 3), ("dedicated", None, 20), ("dedicated", 5, 5)])
def test_slot_limits_per_plan(plan: str, slot_limit: int | None, expected: int) -> None:
    assert app_spec(plan=plan, slotLimit=slot_limit).slot_limit_total() == expected


def test_replicas_are_clamped_to_the_scale_bounds() -> None:
    assert app_spec(replicas=50, scale={"minReplicas": 1, "maxReplicas": 4}).clamped_replicas() == 4
    assert app_spec(replicas=0, scale={"minReplicas": 2, "maxReplicas": 4}).clamped_replicas() == 2


def test_wire_format_is_camel_case_without_unset_fields() -> None:
    wire = app_spec(settings=[{"name": "A", "value": "1", "sticky": True}]).wire()
    assert wire["settings"] == [{"name": "A", "value": "1", "sticky": True}]
    assert wire["functionTimeoutSeconds"] == 300 and "slotLimit" not in wire


def test_slot_name_must_be_a_dns_label() -> None:
    with pytest.raises(ValidationError, match="slot_name|slotName"):
        SlotSpec.model_validate({"appRef": "a", "slotName": "Not_A_Label"})


def test_worker_serves_language_and_version() -> None:
    worker = WorkerSpec.model_validate({"name": "py", "language": "python", "version": "3.12",
                                        "source": {"configMap": {"name": "w"}}})
    assert worker.serves("python", "3.12") and worker.serves("python", None)
    assert not worker.serves("python", "3.11") and not worker.serves("node", "3.12")
    assert worker.mount_path == "/siteextensions/py"
