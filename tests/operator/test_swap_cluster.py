"""Slot swaps on the local control plane, with the real operator process and real hosts behind
the pods' IPs (the pod runner). Each test watches the swap journal and the app's status; nothing
in the operator is replaced or mocked."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from support import eventually, json_lines
from swap_support import (  # noqa: F401 - operator and shop are fixtures used by name
    APP, code_config_map, manifests, Operator, operator, Shop, shop, deploy, serving, Invariants,
)

def test_full_swap_moves_content_keeps_sticky_settings(shop: Shop, operator: Operator, pod_runner: Any) -> None:
    before = deploy(shop)
    specs_before = {kind: shop.get(kind, name)["spec"] for kind, name in (("functionapp", APP),
                                                                           ("slot", f"{APP}-staging"))}
    assert serving(shop, "production")["GREETING"] == "hello v1"
    assert serving(shop, "staging")["GREETING"] == "hello v2"

    request_id = shop.request_swap()
    # Until the flip, production's Service selects production's instance, whatever the staging pods do.
    flipped_seen_at_phase = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        selected = shop.service_selector("production")
        record = shop.record(request_id) or {}  # read after the selector: at least as new
        if selected != before["production"]:
            flipped_seen_at_phase = record.get("phase") or record.get("result")
            break
        assert record.get("result") in (None, "Running"), record
        time.sleep(0.2)
    assert flipped_seen_at_phase in ("Flipping", "ApplyingSourceSettings", "Succeeded"), flipped_seen_at_phase
    record = shop.finished(request_id)
    assert record["result"] == "Succeeded", record
    assert all(p["ready"] and p["warm"] and p["status"] == 200 for p in record["pods"]), record["pods"]
    assert len(record["pods"]) == 2
    assert set(record["durations"]) == {"ApplyingTargetSettings", "WarmingUp", "Flipping", "ApplyingSourceSettings"}

    after = shop.pointers()
    assert after == {"production": before["staging"], "staging": before["production"]}
    assert shop.service_selector("production") == before["staging"]
    assert shop.endpoint_ips("production") == {p["status"]["podIP"] for p in shop.pods(before["staging"])}
    # Non-sticky settings travelled with the content; sticky ones stayed with their slots.
    production = serving(shop, "production")
    staging = serving(shop, "staging")
    assert (production["GREETING"], production["ENVIRONMENT"]) == ("hello v2", "production")
    assert (staging["GREETING"], staging["ENVIRONMENT"]) == ("hello v1", "staging")
    # Specs untouched; re-applying the original manifests neither redeploys nor undoes the swap.
    assert shop.get("functionapp", APP)["spec"] == specs_before["functionapp"]
    slot_spec = shop.get("slot", f"{APP}-staging")["spec"]
    assert slot_spec.pop("swap")["requestId"] == request_id
    assert slot_spec == specs_before["slot"]
    app_version = shop.get("functionapp", APP)["metadata"]["resourceVersion"]
    deployments = {d["metadata"]["name"]: d["metadata"]["generation"]
                   for d in json.loads(shop.kubectl("get", "deployments", "-o", "json").stdout)["items"]}
    print(shop.apply(manifests()))
    time.sleep(5)
    assert shop.pointers() == after
    assert {d["metadata"]["name"]: d["metadata"]["generation"]
            for d in json.loads(shop.kubectl("get", "deployments", "-o", "json").stdout)["items"]} == deployments
    assert shop.get("functionapp", APP)["metadata"]["resourceVersion"] == app_version
    # The same request id again is a no-op.
    shop.request_swap(request_id=request_id)
    time.sleep(3)
    assert shop.pointers() == after
    assert [r["requestId"] for r in shop.journal()["history"]].count(request_id) == 1


def test_swap_with_a_source_pod_never_ready_fails_and_reverts(shop: Shop, operator: Operator,
                                                              pod_runner: Any) -> None:
    before = deploy(shop, timeout_seconds=15)
    staging_template = before["staging"]
    # Every new pod of the staging instance from now on runs but never turns Ready (kwok stage).
    shop.kubectl("patch", "deployment", staging_template, "--type", "merge", "-p", json.dumps(
        {"spec": {"template": {"metadata": {"annotations": {"sim.funcplane.dev/ready": "false"}}}}}))
    production_before = serving(shop, "production")
    with Invariants(shop) as invariants:
        request_id = shop.request_swap()
        record = shop.finished(request_id)
    assert record["result"] == "Failed", record
    # The reason names the staging pod that never turned Ready (a pod of the new template).
    not_ready = rf"pod {before['staging']}-[a-z0-9]+-[a-z0-9]+ is not Ready after 1\d+s"
    assert re.search(not_ready, record["message"]), record
    assert "ApplyingTargetSettings" in record["durations"] and "Flipping" not in record["durations"]
    # Reverted: pointers as before, the source runs its own sticky settings again, production untouched.
    assert shop.pointers() == before
    instances = shop.status()["instances"]
    assert instances[before["staging"]].get("stickySettingsFrom") is None
    assert shop.service_selector("production") == before["production"]
    assert serving(shop, "production") == production_before
    assert invariants.samples > 5 and not invariants.violations, invariants.violations
    slot_status = shop.get("slot", f"{APP}-staging")["status"]["swap"]
    assert slot_status["phase"] == "Failed" and "is not Ready" in slot_status["message"]
    events = shop.kubectl("get", "events", "--field-selector", f"involvedObject.name={APP}-staging",
                          "-o", "json").stdout
    assert "SwapFailed" in events and "SwapReverting" in events


@pytest.mark.parametrize("phase", ["ApplyingTargetSettings", "WarmingUp", "Flipping", "ApplyingSourceSettings"])
def test_operator_killed_mid_swap_resumes(shop: Shop, operator: Operator, pod_runner: Any, cluster: Any,
                                          namespace: str, phase: str) -> None:
    from kubernetes import client, watch

    # Pods turn Ready 3 s after starting, so rollouts (phases 1 and 4) take a while, as in real life.
    # Warm-up runs the app's warmup function for 2 s.
    before = deploy(shop, staging_annotations={"sim.funcplane.dev/ready-after": "3s"}, warmup_seconds=2)
    api = client.CoreV1Api(cluster.api_client())
    with Invariants(shop) as invariants:
        request_id = shop.request_swap()
        stream = watch.Watch()
        killed_in = None
        for event in stream.stream(api.list_namespaced_config_map, namespace, timeout_seconds=120,
                                   field_selector=f"metadata.name={APP}-swap-journal"):
            current = json.loads(event["object"].data["journal.json"]).get("current") or {}
            if current.get("requestId") == request_id and current.get("phase") == phase:
                operator.kill()
                stream.stop()
                killed_in = (shop.journal().get("current") or {}).get("phase")
        assert killed_in == phase, f"the swap was in phase {killed_in} when killed, not {phase}: {shop.journal()}"
        operator.start()
        record = shop.finished(request_id, timeout=180)
    assert record["result"] == "Succeeded", (killed_in, record)
    assert shop.pointers() == {"production": before["staging"], "staging": before["production"]}
    assert eventually(lambda: shop.endpoint_ips("production") ==
                      {p["status"]["podIP"] for p in shop.pods(before["staging"])}, timeout=30,
                      what="production endpoints = the former staging pods")
    assert invariants.samples > 5 and not invariants.violations, (killed_in, invariants.violations)
    assert serving(shop, "production")["GREETING"] == "hello v2"
    print(f"killed in phase {killed_in} (asked {phase}); durations {record['durations']}")


def test_preview_cancel_complete_rollback_and_refused_concurrent_swap(shop: Shop, operator: Operator,
                                                                       pod_runner: Any) -> None:
    before = deploy(shop)
    shop.apply([{"apiVersion": "funcplane.io/v1alpha1", "kind": "Slot", "metadata": {"name": f"{APP}-qa"},
                 "spec": {"appRef": APP, "slotName": "qa", "code": {"configMap": {"name": "shop-code-v2"}}}}])
    eventually(lambda: shop.ready(slots=3), timeout=120, what="qa slot ready")

    # Preview: staging runs production's sticky settings on its own hostname, and waits.
    preview = shop.request_swap(mode="preview")
    eventually(lambda: (shop.record(preview) or {}).get("phase") == "AwaitingCompletion", timeout=120,
               what="preview warm and waiting")
    assert serving(shop, "staging", {"ENVIRONMENT": "production"})["GREETING"] == "hello v2"
    assert shop.service_selector("production") == before["production"]

    # A second swap while the preview waits is refused, with the reason in the other slot's status.
    concurrent = shop.request_swap(slot="qa")
    refused = shop.finished(concurrent)
    assert refused["result"] == "Refused" and preview in refused["message"], refused
    qa_status = eventually(lambda: shop.get("slot", f"{APP}-qa")["status"].get("swap"), what="qa swap status")
    assert qa_status["phase"] == "Refused" and "in progress" in qa_status["message"]

    # Cancel restores staging's own settings; production never changed.
    shop.request_swap(action="cancel", request_id=preview, mode="preview")
    cancelled = shop.finished(preview)
    assert cancelled["result"] == "Cancelled", cancelled
    assert shop.pointers()["production"] == before["production"]
    serving(shop, "staging", {"ENVIRONMENT": "staging", "GREETING": "hello v2"})

    # Preview again, then complete: the flip happens only on complete.
    second = shop.request_swap(mode="preview")
    eventually(lambda: (shop.record(second) or {}).get("phase") == "AwaitingCompletion", timeout=120,
               what="second preview waiting")
    assert shop.pointers()["production"] == before["production"]
    shop.request_swap(action="complete", request_id=second, mode="preview")
    completed = shop.finished(second)
    assert completed["result"] == "Succeeded", completed
    assert shop.pointers()["production"] == before["staging"]
    assert serving(shop, "production")["GREETING"] == "hello v2"

    # Rollback: a swap back, right after the swap.
    rollback = shop.request_swap(action="rollback")
    rolled_back = shop.finished(rollback)
    assert rolled_back["result"] == "Succeeded" and rolled_back["rollbackOf"] == second, rolled_back
    assert {k: v for k, v in shop.pointers().items() if k != "qa"} == before
    production = serving(shop, "production")
    assert (production["GREETING"], production["ENVIRONMENT"]) == ("hello v1", "production")
    history = shop.journal()["history"]
    assert [r["requestId"] for r in history[:4]] == [rollback, second, preview, concurrent]
    assert [r["result"] for r in history[:4]] == ["Succeeded", "Succeeded", "Cancelled", "Refused"]
    assert all(r["requestedBy"] != "unknown" for r in history[:4])


def test_auto_swap_swaps_each_new_deployment_into_production(shop: Shop, operator: Operator,
                                                             pod_runner: Any) -> None:
    objects = manifests()
    objects[3]["spec"]["autoSwapTarget"] = {"target": "production"}
    shop.apply(objects)
    # The slot's first deployment is swapped in once warm.
    eventually(lambda: any(r["result"] == "Succeeded" for r in shop.journal().get("history", [])),
               timeout=180, what="first auto-swap")
    assert serving(shop, "production")["GREETING"] == "hello v2"
    assert serving(shop, "production")["ENVIRONMENT"] == "production"
    # A new deployment to staging (new code and setting) goes to production by itself.
    objects.append(code_config_map("shop-code-v3", "v3"))
    objects[3]["spec"]["code"] = {"configMap": {"name": "shop-code-v3"}}
    objects[3]["spec"]["settings"][0]["value"] = "hello v3"
    shop.apply(objects)
    eventually(lambda: sum(r["result"] == "Succeeded" and r["trigger"] == "auto-swap"
                           for r in shop.journal().get("history", [])) == 2, timeout=180, what="second auto-swap")
    assert serving(shop, "production", {"GREETING": "hello v3"})["ENVIRONMENT"] == "production"
    # Non-HTTP triggers follow the slot: on in production, off in staging, whichever instance serves.
    assert serving(shop, "production")["FUNCPLANE_NON_HTTP_TRIGGERS"] == "true"
    assert serving(shop, "staging")["FUNCPLANE_NON_HTTP_TRIGGERS"] == "false"
    # So do the slot's identity and trigger state: its host id and slot name.
    assert {k: serving(shop, "production")[k] for k in ("FUNCPLANE_HOST_ID", "FUNCPLANE_SLOT_NAME")} == \
        {"FUNCPLANE_HOST_ID": "shop", "FUNCPLANE_SLOT_NAME": "production"}
    assert {k: serving(shop, "staging")[k] for k in ("FUNCPLANE_HOST_ID", "FUNCPLANE_SLOT_NAME")} == \
        {"FUNCPLANE_HOST_ID": "shop-staging", "FUNCPLANE_SLOT_NAME": "staging"}
    # Re-applying the same manifests does not start another swap.
    shop.apply(objects)
    time.sleep(5)
    assert sum(r["trigger"] == "auto-swap" for r in shop.journal()["history"]) == 2


def test_timers_run_in_one_pod_of_the_slot_and_follow_it_through_a_swap(shop: Shop, operator: Operator,
                                                                        pod_runner: Any, tmp_path: Path) -> None:
    runs = tmp_path / "timer-runs.jsonl"

    def recorded() -> list[dict[str, Any]]:
        return json_lines(runs)

    objects = manifests(replicas=2)
    for resource in objects[2:]:
        resource["spec"]["settings"].append({"name": "RUNS_FILE", "value": str(runs)})
    shop.apply(objects)
    eventually(shop.ready, timeout=120, interval=0.5, what="app and staging slot Ready")
    before = shop.pointers()
    eventually(lambda: len(recorded()) >= 4, timeout=60, what="four timer runs")
    first = recorded()
    # Production runs the timer in one of its two pods; staging (nonHttpTriggers off) never does.
    assert {r["slot"] for r in first} == {"production"}, first
    assert len({r["pod"] for r in first}) == 1, first
    assert first[0]["pod"] in {p["status"]["podIP"] for p in shop.pods(before["production"])}

    record = shop.finished(shop.request_swap())
    assert record["result"] == "Succeeded", record
    # After the swap the timer is production's still, run by one pod of the instance now serving it.
    new_pods = {p["status"]["podIP"] for p in shop.pods(before["staging"])}
    eventually(lambda: recorded()[-1]["pod"] in new_pods, timeout=60, what="the new production pods to run it")
    mark = len(recorded())
    eventually(lambda: len(recorded()) >= mark + 3, timeout=30, what="three more runs")
    everything = recorded()
    assert {r["slot"] for r in everything} == {"production"}, everything
    assert len({r["pod"] for r in everything[mark:]}) == 1
    # Never two runs of one occurrence, not even while the source warmed up as production.
    occurrences = [r["occurrence"] for r in everything if r["occurrence"]]
    assert len(occurrences) == len(set(occurrences)), everything


def kubectl_funcplane(cluster: Any, namespace: str, *argv: str) -> int:
    """The plugin's swap commands, in process, against the real API server."""
    import argparse

    from funcplane.cli import swap as swap_cli

    parser = argparse.ArgumentParser(prog="kubectl funcplane")
    swap_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([*argv, "-n", namespace, "--kubeconfig", str(cluster.kubeconfig)])
    return args.handler(args)


def test_cli_swaps_follows_progress_shows_history_and_rolls_back(shop: Shop, operator: Operator, pod_runner: Any,
                                                                 cluster: Any, namespace: str,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    before = deploy(shop)
    assert kubectl_funcplane(cluster, namespace, "swap", APP, "--slot", "staging", "--wait", "--timeout", "180") == 0
    followed = capsys.readouterr().out
    assert "staging -> production" in followed and "Succeeded" in followed
    assert "ApplyingTargetSettings" in followed and "WarmingUp" in followed
    assert shop.pointers() == {"production": before["staging"], "staging": before["production"]}

    assert kubectl_funcplane(cluster, namespace, "rollback", APP, "--slot", "staging", "--wait") == 0
    assert shop.pointers() == before
    assert kubectl_funcplane(cluster, namespace, "status", APP) == 0
    table = capsys.readouterr().out
    assert "no swap in progress" in table
    rows = [line for line in table.splitlines() if line.startswith(("start-", "rollback-"))]
    assert len(rows) == 2 and all("Succeeded" in row and "WarmingUp=" in row for row in rows), table
    kubeconfig = json.loads(cluster.kubectl("config", "view", "-o", "json", "--minify").stdout)
    user = kubeconfig["contexts"][0]["context"]["user"]
    assert all(user[:20] in row for row in rows)

    # Nothing to cancel: refused with the reason, and the command says so.
    assert kubectl_funcplane(cluster, namespace, "cancel", APP, "--slot", "staging", "--wait") == 1
    assert "no swap before its flip to cancel" in capsys.readouterr().out
    assert kubectl_funcplane(cluster, namespace, "swap", APP, "--slot", "nope") == 2
    assert "has no slot 'nope'" in capsys.readouterr().err
