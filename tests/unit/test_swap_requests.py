"""How Slot objects become swap requests, and how the CLI shows a swap."""

from __future__ import annotations

import argparse

from funcplane.cli import swap as swap_cli
from funcplane.swap.engine import ANNOTATION_REQUESTED_BY, request_of, slots_of
from funcplane.swap.journal import PodWarmup, SwapRecord


def slot(name: str, created: str, swap: dict | None = None, **meta: object) -> dict:
    spec = {"appRef": "shop", "slotName": name} | ({"swap": swap} if swap else {})
    return {"metadata": {"name": f"shop-{name}", "creationTimestamp": created} | meta, "spec": spec}


def test_request_carries_defaults_and_who_asked() -> None:
    by_annotation = slot("staging", "t1", {"requestId": "r1"}, annotations={ANNOTATION_REQUESTED_BY: "ann"})
    request = request_of(by_annotation)
    assert (request.source, request.target, request.mode, request.action, request.requested_by) == (
        "staging", "production", "full", "start", "ann")
    assert request.handled_key == "staging/r1/start"
    by_manager = slot("staging", "t1", {"requestId": "r2", "action": "rollback"}, managedFields=[
        {"manager": "argocd-controller", "fieldsV1": {"f:spec": {"f:swap": {}}}}])
    assert request_of(by_manager).requested_by == "argocd-controller"
    assert request_of(slot("staging", "t1")) is None


def test_slots_are_taken_oldest_first_and_deleting_ones_skipped() -> None:
    bodies = [slot("b", "2"), slot("a", "1"), slot("c", "0", deletionTimestamp="x"),
              {"metadata": {"name": "other"}, "spec": {"appRef": "other", "slotName": "x"}}]
    assert [s["spec"]["slotName"] for s in slots_of(bodies, "shop")] == ["a", "b"]


def test_cli_parses_each_command_and_describes_pods() -> None:
    parser = argparse.ArgumentParser()
    swap_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["swap", "shop", "--slot", "staging", "--preview", "--target", "qa", "--wait"])
    assert (args.swap_command, args.preview, args.target, args.wait) == ("swap", True, "qa", True)
    assert parser.parse_args(["cancel", "shop", "--slot", "staging"]).swap_command == "cancel"
    assert parser.parse_args(["status", "shop", "-n", "apps"]).namespace == "apps"
    record = SwapRecord(request_id="r1", source="staging", target="production", phase="WarmingUp",
                        requested_by="ann",
                        pods=[PodWarmup(pod="p-1", ip="10.0.0.1", ready=True, warm=True, status=200),
                              PodWarmup(pod="p-2", ip="10.0.0.2", ready=True, status=503,
                                        message="worker not initialized")],
                        durations={"ApplyingTargetSettings": 3.21})
    text = swap_cli.describe(record)
    assert "swap r1: staging -> production (full, request, by ann): WarmingUp" in text
    assert "pod p-1 (10.0.0.1): Ready, warm" in text
    assert "pod p-2 (10.0.0.2): Ready, warm-up 503 - worker not initialized" in text
    assert "ApplyingTargetSettings 3.2s" in text
