"""Pure pieces of the runtime: options, reconcile metrics, structured logs, kopf settings."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import kopf
import pytest
import yaml
from prometheus_client import REGISTRY

from funcplane.controllers import runtime_kopf
from funcplane.controllers.metrics import observe_reconcile
from funcplane.controllers.runtime import parse_options
from funcplane.controllers.runtime_logging import JsonFormatter


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_options_need_exactly_one_scope(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FUNCPLANE_NAMESPACES", raising=False)
    monkeypatch.delenv("FUNCPLANE_ALL_NAMESPACES", raising=False)
    with pytest.raises(SystemExit):
        parse_options([])
    assert "--namespace NAME (repeatable) or --all-namespaces" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_options(["--namespace", "a", "--all-namespaces"])
    options = parse_options(["-n", "a", "-n", "b"])
    assert options.namespaces == ("a", "b") and not options.clusterwide and options.lease_namespace == "a"


def test_endpoints_listen_on_loopback_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    # A wildcard listener on 8080 would answer for every pod IP of the local cluster, whose pod
    # CIDR is local: run by hand, the operator must not.
    monkeypatch.delenv("FUNCPLANE_BIND_ADDRESS", raising=False)
    assert parse_options(["-n", "a"]).bind_address == "127.0.0.1"
    assert parse_options(["-n", "a", "--bind-address", "0.0.0.0"]).bind_address == "0.0.0.0"


def test_options_come_from_the_environment_and_flags_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FUNCPLANE_NAMESPACES", "x, y")
    monkeypatch.setenv("FUNCPLANE_METRICS_PORT", "9100")
    monkeypatch.setenv("POD_NAME", "operator-7d9-abc")
    monkeypatch.setenv("POD_NAMESPACE", "funcplane-system")
    options = parse_options([])
    assert options.namespaces == ("x", "y") and options.metrics_port == 9100
    assert options.identity == "operator-7d9-abc" and options.lease_namespace == "funcplane-system"
    assert parse_options(["--all-namespaces", "--metrics-port", "9200"]).clusterwide
    assert parse_options(["--all-namespaces", "--metrics-port", "9200"]).metrics_port == 9200


def test_unsafe_lease_timing_is_refused_naming_the_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_options(["-n", "a", "--lease-duration", "5", "--renew-deadline", "8"])
    assert "renew-deadline=8.0s" in capsys.readouterr().err


def test_observe_reconcile_counts_results_and_reraises() -> None:
    before_ok = sample("funcplane_reconciles_total", kind="UnitKind", result="success")
    with observe_reconcile("UnitKind"):
        pass
    with pytest.raises(kopf.TemporaryError):
        with observe_reconcile("UnitKind"):
            raise kopf.TemporaryError("later", delay=1)
    with pytest.raises(KeyError):
        with observe_reconcile("UnitKind"):
            raise KeyError("boom")
    assert sample("funcplane_reconciles_total", kind="UnitKind", result="success") == before_ok + 1
    assert sample("funcplane_reconciles_total", kind="UnitKind", result="retry") >= 1
    assert sample("funcplane_reconciles_total", kind="UnitKind", result="error") >= 1
    assert sample("funcplane_reconcile_errors_total", kind="UnitKind", error="KeyError") >= 1
    assert sample("funcplane_reconciles_in_progress", kind="UnitKind") == 0
    assert sample("funcplane_reconcile_duration_seconds_count", kind="UnitKind") >= 3


async def test_observe_reconcile_works_inside_async_handlers() -> None:
    async def handler() -> None:
        with observe_reconcile("AsyncKind"):
            assert sample("funcplane_reconciles_in_progress", kind="AsyncKind") == 1
            await asyncio.sleep(0.01)

    await handler()
    assert sample("funcplane_reconciles_total", kind="AsyncKind", result="success") == 1
    assert sample("funcplane_reconcile_duration_seconds_sum", kind="AsyncKind") >= 0.01


def test_observe_reconcile_needs_a_kind() -> None:
    with pytest.raises(ValueError, match="kind must be a non-empty"):
        observe_reconcile("")


def test_json_logs_carry_the_object_and_extra_fields() -> None:
    record = logging.LogRecord("kopf.objects", logging.WARNING, __file__, 1, "slot %s refused", ("s4",), None)
    record.k8s_ref = {"kind": "Slot", "namespace": "apps", "name": "s4", "uid": "u"}
    record.reason = "PlanLimit"
    entry = json.loads(JsonFormatter("replica-1").format(record))
    assert entry["message"] == "slot s4 refused" and entry["level"] == "warning"
    assert entry["object"] == {"kind": "Slot", "namespace": "apps", "name": "s4"}
    assert entry["reason"] == "PlanLimit" and entry["identity"] == "replica-1"
    assert "k8s_ref" not in entry


def test_kopf_settings_keep_state_under_the_project_prefix() -> None:
    settings = runtime_kopf.operator_settings(identity="r1", clusterwide=False, workers=2)
    assert settings.peering.standalone
    assert settings.persistence.finalizer.startswith("funcplane.io/")
    assert settings.persistence.progress_storage.prefix == "funcplane.io"
    assert settings.persistence.diffbase_storage.prefix == "funcplane.io"
    assert settings.posting.enabled and settings.posting.level == logging.WARNING
    assert settings.scanning.disabled, "a namespaced operator must not need cluster-wide list/watch"
    assert not runtime_kopf.operator_settings(identity="r1", clusterwide=True, workers=2).scanning.disabled


def _run_operator(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUNCPLANE_") and k != "KUBECONFIG"}
    return subprocess.run([str(Path(sys.executable).parent / "funcplane-operator"), *args], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=60)


def test_bad_start_arguments_fail_with_a_message_naming_the_fix(tmp_path: Path) -> None:
    missing = _run_operator("-n", "a", "--kubeconfig", str(tmp_path / "nope"), tmp_path=tmp_path)
    assert missing.returncode != 0 and "--kubeconfig" in missing.stderr and "no such file" in missing.stderr

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    unknown = _run_operator("-n", "a", "--kubeconfig", str(kubeconfig), "--handlers", "no_such_handlers",
                            tmp_path=tmp_path)
    assert unknown.returncode != 0 and "--handlers no_such_handlers: cannot import it" in unknown.stderr

    in_use = socket.socket()
    in_use.bind(("127.0.0.1", 0))
    in_use.listen()
    port = in_use.getsockname()[1]
    try:
        busy = _run_operator("-n", "a", "--kubeconfig", str(kubeconfig), "--handlers", "kopf",
                             "--bind-address", "127.0.0.1", "--metrics-port", str(port), tmp_path=tmp_path)
    finally:
        in_use.close()
    assert busy.returncode != 0 and f"cannot listen on 127.0.0.1:{port}" in busy.stderr, busy.stderr
