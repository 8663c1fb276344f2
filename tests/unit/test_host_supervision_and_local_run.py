"""Pure parts of host hardening: restart back-off, the worker's thread count, time span ranges,
local-run keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from funcplane_host.app.timespan import parse_timespan
from funcplane_host.local_run import with_local_keys
from funcplane_host.settings import load_settings
from funcplane_host.workers.supervisor import RestartBackoff, SupervisionPolicy
from funcplane_pyworker.invoker import thread_count


def test_restart_backoff_doubles_is_capped_and_resets_after_a_healthy_period() -> None:
    policy = SupervisionPolicy()
    backoff = RestartBackoff(policy)
    crash_loop = [backoff.delay(ready_for=0) for _ in range(8)]
    assert crash_loop[:4] == [1, 2, 4, 8] and max(crash_loop) == policy.backoff_max <= 10
    # Up for a while but less than the reset period: still counted as the same run of crashes.
    assert backoff.delay(ready_for=policy.healthy_reset_after / 2) == policy.backoff_max
    # The first crash after a long healthy run restarts after the initial delay.
    assert backoff.delay(ready_for=6 * 3600) == policy.backoff_initial == 1
    assert backoff.delay(ready_for=0) == 2
    # A deliberate replacement (after a function timeout) waits for nothing and is no crash.
    assert backoff.delay(ready_for=0, deliberate=True) == 0
    assert backoff.delay(ready_for=0) == 4


@pytest.mark.parametrize(("setting", "expected"), [(None, None), ("", None), ("1", 1), (" 64 ", 64),
                                                   ("0", None), ("-3", None), ("many", None)])
def test_python_thread_count_setting(setting: str | None, expected: int | None) -> None:
    assert thread_count(setting) == expected


@pytest.mark.parametrize("text", ["99:99:99", "24:00:00", "00:60:00", "00:00:60"])
def test_time_span_parts_out_of_range_are_errors(text: str) -> None:
    with pytest.raises(ValueError, match=rf"host.json x: '{text}' is out of range"):
        parse_timespan(text, field_name="host.json x")


def test_local_keys_are_generated_once_per_app_and_kept(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    env = {"XDG_STATE_HOME": str(tmp_path / "state")}
    first = with_local_keys(load_settings(["--app", str(app)], env))
    second = with_local_keys(load_settings(["--app", str(app)], env))
    assert first.keys_file == second.keys_file and first.keys_file is not None
    keys = json.loads(first.keys_file.read_text())
    assert keys["masterKey"] and keys["functionKeys"]["default"]
    assert first.keys_file.stat().st_mode & 0o777 == 0o600
    assert str(first.keys_file) in first.keys_hint
    # Keys configured, or a pod: nothing is generated.
    assert with_local_keys(load_settings(["--app", str(app)], {**env, "FUNCPLANE_MASTER_KEY": "k"})).keys_file is None
    in_pod = with_local_keys(load_settings(["--app", str(app)], {**env, "KUBERNETES_SERVICE_HOST": "10.0.0.1"}))
    assert in_pod.keys_file is None
