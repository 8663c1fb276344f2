"""host.json, worker.config.json, the managed worker registry, settings: pure parsing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from funcplane_host.app.functions import FunctionDefinition, FunctionDefinitionError, validate_bindings
from funcplane_host.app.host_json import HostJsonError, deep_merge, load_host_config, parse_host_config
from funcplane_host.app.timespan import parse_timespan
from funcplane_host.settings import SettingsError, load_settings
from funcplane_host.workers.config import WorkerConfigError, host_arguments, load_worker_description
from funcplane_host.workers.registry import WorkerRegistry, WorkerSelectionError
from funcplane_host.workers.supervisor import SupervisionPolicy


def test_timespan() -> None:
    assert parse_timespan("00:05:00", field_name="f") == 300
    assert parse_timespan("1.00:00:01.5", field_name="f") == 86401.5
    with pytest.raises(ValueError, match="f: '5 minutes' is not a time span"):
        parse_timespan("5 minutes", field_name="f")


def test_host_json_defaults_and_deep_merged_override(tmp_path: Path) -> None:
    (tmp_path / "host.json").write_text(json.dumps({
        "version": "2.0", "functionTimeout": "00:01:00",
        "extensions": {"http": {"routePrefix": "api", "maxConcurrentRequests": 4}},
        "logging": {"logLevel": {"default": "Warning"}},
    }))
    override = tmp_path / "override.json"
    override.write_text(json.dumps({"extensions": {"http": {"routePrefix": "/v2/"}}}))
    config = load_host_config(tmp_path, override)
    assert config.function_timeout == 60
    assert config.http.route_prefix == "v2" and config.http.max_concurrent_requests == 4
    assert config.http.max_outstanding_requests == -1
    assert config.log_levels == {"default": "Warning"}
    assert load_host_config(tmp_path / "missing", None).function_timeout == 300
    assert parse_host_config({"functionTimeout": "-1"}).function_timeout is None
    assert deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}, "d": 4}) == {"a": {"b": 1, "c": 3}, "d": 4}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"functionTimeout": "soon"}, "host.json functionTimeout: 'soon' is not a time span"),
        ({"extensions": {"http": {"maxConcurrentRequests": 0}}}, "extensions.http.maxConcurrentRequests: 0"),
        ({"extensions": {"http": {"routePrefix": 5}}}, "routePrefix: 5 has the wrong type; it must be a string"),
        ({"functions": "a"}, "host.json functions: 'a' has the wrong type; it must be a list"),
    ],
)
def test_host_json_errors_name_the_field(raw: dict, message: str) -> None:
    with pytest.raises(HostJsonError, match=message):
        parse_host_config(raw)


def test_bindings_validation() -> None:
    bindings = validate_bindings("f", [{"type": "httpTrigger", "direction": "IN", "name": "req"}])
    assert bindings[0]["direction"] == "in"
    with pytest.raises(FunctionDefinitionError, match=r"bindings\[0\]\.name is required"):
        validate_bindings("f", [{"type": "httpTrigger", "direction": "in"}])
    with pytest.raises(FunctionDefinitionError, match="exactly one trigger, found 0"):
        FunctionDefinition(name="f", bindings=[{"type": "http", "direction": "out", "name": "$return"}])
    with pytest.raises(FunctionDefinitionError, match="authLevel 'root'"):
        FunctionDefinition(name="f", bindings=[{"type": "httpTrigger", "direction": "in", "name": "r",
                                                "authLevel": "root"}])
    definition = FunctionDefinition(name="Hello", bindings=[{"type": "httpTrigger", "direction": "in", "name": "r"}])
    assert definition.http is not None and definition.http.route == "Hello"
    assert definition.http.auth_level == "function" and definition.http.methods is None


def _worker(folder: Path, **description: object) -> Path:
    folder.mkdir(parents=True)
    (folder / "worker.config.json").write_text(json.dumps({"description": description}))
    return folder


def test_worker_config_command_with_placeholders(tmp_path: Path) -> None:
    folder = _worker(tmp_path / "py", language="python", defaultExecutablePath="python3",
                     defaultWorkerPath="%FUNCTIONS_WORKER_RUNTIME_VERSION%/{os}/worker.py",
                     arguments=["-X no_debug_ranges"], defaultRuntimeVersion="3.11",
                     supportedRuntimeVersions=["3.11", "3.12"], workerIndexing="true")
    (folder / "3.12" / "LINUX").mkdir(parents=True)
    (folder / "3.12" / "LINUX" / "worker.py").write_text("")
    description = load_worker_description(folder)
    assert description.worker_indexing and description.supports_version("3.12")
    assert not description.supports_version("3.9")
    command = description.command({"PATH": "/usr/bin"}, "3.12")
    assert command[1:] == ["-X", "no_debug_ranges", str(folder / "3.12" / "LINUX" / "worker.py")]
    with pytest.raises(WorkerConfigError, match=r"defaultWorkerPath resolves to .*3\.11/LINUX/worker\.py"):
        description.command({"PATH": "/usr/bin"}, None)


def test_worker_config_errors(tmp_path: Path) -> None:
    with pytest.raises(WorkerConfigError, match="description.language is required"):
        load_worker_description(_worker(tmp_path / "a", defaultExecutablePath="x"))
    with pytest.raises(WorkerConfigError, match="hostArguments 'old' must be one of"):
        load_worker_description(_worker(tmp_path / "b", language="x", defaultExecutablePath="x", hostArguments="old"))


def test_host_arguments_forms() -> None:
    both = host_arguments("all", 5000, "w1", "r1", 99)
    assert both[:4] == ["--host", "127.0.0.1", "--port", "5000"]
    assert "--functions-uri" in both and "http://127.0.0.1:5000/" in both
    assert "--functions-uri" not in host_arguments("legacy", 5000, "w1", "r1", 99)
    assert "--workerId" not in host_arguments("modern", 5000, "w1", "r1", 99)


def test_registry_modes(tmp_path: Path) -> None:
    default_dir = tmp_path / "default"
    _worker(default_dir / "python", language="python", defaultExecutablePath="python3", extensions=[".py"])
    _worker(default_dir / "node", language="node", defaultExecutablePath="node", extensions=[".js"])
    _worker(default_dir / "java", language="java", defaultExecutablePath="java")
    declared = _worker(tmp_path / "ext" / "node", language="node", defaultExecutablePath="node", extensions=[".mjs"])
    managed = tmp_path / "workers.json"
    managed.write_text(json.dumps({"workers": {
        "node": {"path": str(declared), "enabled": True},
        "java": {"enabled": False},
        "powershell": {"path": str(tmp_path / "missing"), "enabled": True},
    }}))
    registry = WorkerRegistry.load(managed, default_dir)
    sources = {w.name: (w.source, w.directory) for w in registry.workers}
    assert sources == {"node": ("managed", declared), "python": ("default", default_dir / "python")}
    assert list(registry.disabled) == ["java"]
    assert len(registry.errors) == 1 and "'powershell': declared path" in registry.errors[0]
    assert registry.extensions() == {".mjs": "node", ".py": "python"}  # the declared node replaced the default
    with pytest.raises(WorkerSelectionError, match=r"worker\(s\) \['java'\] are disabled"):
        registry.select("java", None)


def test_registry_reports_a_bad_managed_config(tmp_path: Path) -> None:
    managed = tmp_path / "workers.json"
    managed.write_text(json.dumps({"workers": {"node": {"enabled": "yes"}}}))
    registry = WorkerRegistry.load(managed, tmp_path / "none")
    assert registry.errors == [f"{managed}: workers.node.enabled must be true or false"]


def test_settings_flags_override_environment(tmp_path: Path) -> None:
    env = {"AzureWebJobsScriptRoot": str(tmp_path), "FUNCPLANE_HTTP_PORT": "9000",
           "FUNCTIONS_WORKER_PROCESS_COUNT": "3", "FUNCPLANE_SLOT_NAME": "staging"}
    settings = load_settings(["--port", "9100"], env)
    assert (settings.port, settings.app_root, settings.worker_process_count) == (9100, tmp_path, 3)
    assert settings.slot_name == "staging"
    with pytest.raises(SettingsError, match="FUNCTIONS_WORKER_PROCESS_COUNT=0 is out of range"):
        load_settings([], {"FUNCTIONS_WORKER_PROCESS_COUNT": "0"})


def test_worker_health_section() -> None:
    config = parse_host_config({"funcplane": {"workerHealth": {"statusInterval": "00:00:05",
                                                               "restartBackoffMax": "00:00:30"}}})
    policy = SupervisionPolicy.from_host_json(config.worker_health)
    assert (policy.status_interval, policy.backoff_max, policy.status_timeout) == (5, 30, 30)
    with pytest.raises(HostJsonError, match="funcplane.workerHealth.heartbeat: unknown option"):
        parse_host_config({"funcplane": {"workerHealth": {"heartbeat": "00:00:01"}}})
