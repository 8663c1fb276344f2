"""Host settings from the pod contract: command-line flags override environment variables."""

from __future__ import annotations

import argparse
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Mapping

BUNDLED_WORKERS_DIR = Path(__file__).resolve().parent.parent / "workers"
IMAGE_WORKERS_DIR = Path("/opt/funcplane/workers")
DEFAULT_APP_ROOT = "/home/site/wwwroot"
DEFAULT_WORKER_CONFIG = "/etc/funcplane/workers/workers.json"
DEFAULT_HOST_JSON_OVERRIDE = "/etc/funcplane/host/host.json"
DEFAULT_KEYS_FILE = "/etc/funcplane/keys/keys.json"


class SettingsError(ValueError):
    """A flag or environment variable has a value the host cannot use."""


@dataclass(frozen=True)
class HostSettings:
    app_root: Path
    bind: str = "0.0.0.0"
    port: int = 8080
    worker_config: Path = Path(DEFAULT_WORKER_CONFIG)
    workers_dir: Path = BUNDLED_WORKERS_DIR
    host_json_override: Path | None = None
    keys_file: Path | None = None
    master_key: str | None = None
    host_id: str = "funcplane-host"
    slot_name: str = "production"
    non_http_triggers: bool = True
    # Where timer schedule status is kept (per host id); None keeps it in memory only.
    state_dir: Path | None = None
    worker_runtime: str | None = None
    worker_runtime_version: str | None = None
    worker_process_count: int = 1
    # The app settings (the host's environment) handed to worker processes.
    environment: Mapping[str, str] = field(default_factory=dict)
    # Where a caller refused for want of a key can get one (said in the 401).
    keys_hint: str = "get one from the app's keys (in Kubernetes: keys.json in the slot's keys Secret)"
    # One log line per HTTP request (method, path, status, duration, invocation id).
    access_log: bool = False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="funcplane-host", description="Serve an Azure-Functions-style app."
    )
    parser.add_argument("--app", help="app root (host.json, function folders or function_app.py)")
    parser.add_argument("--bind", help="HTTP listen address")
    parser.add_argument("--port", type=int, help="HTTP listen port")
    parser.add_argument("--worker-config", help="managed worker config file")
    parser.add_argument("--workers-dir", help="default workers directory")
    parser.add_argument("--host-json-override", help="JSON object deep-merged over host.json")
    parser.add_argument("--keys-file", help="keys file (masterKey, functionKeys, functions)")
    parser.add_argument("--host-id", help="host id, distinct per slot instance")
    parser.add_argument("--access-log", action="store_true", default=None,
                        help="log one line per HTTP request (also FUNCPLANE_ACCESS_LOG=true)")
    return parser


def _default_workers_dir() -> Path:
    return IMAGE_WORKERS_DIR if IMAGE_WORKERS_DIR.is_dir() else BUNDLED_WORKERS_DIR


def _existing(path: str) -> Path | None:
    candidate = Path(path)
    return candidate if candidate.is_file() else None


def _flag_or_env(flag: str | None, env: Mapping[str, str], name: str) -> str | None:
    if flag is not None:
        return flag
    value = env.get(name)
    return value if value else None


def _process_count(env: Mapping[str, str]) -> int:
    raw = env.get("FUNCTIONS_WORKER_PROCESS_COUNT", "1") or "1"
    try:
        count = int(raw)
    except ValueError:
        raise SettingsError(
            f"FUNCTIONS_WORKER_PROCESS_COUNT={raw!r} is not a whole number; set it to 1..10"
        ) from None
    if not 1 <= count <= 10:
        raise SettingsError(f"FUNCTIONS_WORKER_PROCESS_COUNT={count} is out of range; use 1..10")
    return count


def load_settings(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> HostSettings:
    env = dict(os.environ if env is None else env)
    args = build_parser().parse_args(argv)
    port_text = str(args.port) if args.port is not None else env.get("FUNCPLANE_HTTP_PORT", "8080")
    try:
        port = int(port_text)
    except ValueError:
        raise SettingsError(f"FUNCPLANE_HTTP_PORT={port_text!r} is not a port number") from None
    override = _flag_or_env(args.host_json_override, env, "FUNCPLANE_HOST_JSON_OVERRIDE")
    keys = _flag_or_env(args.keys_file, env, "FUNCPLANE_KEYS_FILE")
    workers_dir = _flag_or_env(args.workers_dir, env, "FUNCPLANE_WORKERS_DIR")
    return HostSettings(
        app_root=Path(_flag_or_env(args.app, env, "AzureWebJobsScriptRoot") or DEFAULT_APP_ROOT).resolve(),
        bind=_flag_or_env(args.bind, env, "FUNCPLANE_HTTP_HOST") or "0.0.0.0",
        port=port,
        worker_config=Path(
            _flag_or_env(args.worker_config, env, "FUNCPLANE_WORKER_CONFIG") or DEFAULT_WORKER_CONFIG
        ),
        workers_dir=Path(workers_dir) if workers_dir else _default_workers_dir(),
        host_json_override=Path(override) if override else _existing(DEFAULT_HOST_JSON_OVERRIDE),
        keys_file=Path(keys) if keys else _existing(DEFAULT_KEYS_FILE),
        master_key=env.get("FUNCPLANE_MASTER_KEY") or None,
        host_id=_flag_or_env(args.host_id, env, "FUNCPLANE_HOST_ID") or socket.gethostname(),
        slot_name=env.get("FUNCPLANE_SLOT_NAME") or "production",
        non_http_triggers=(env.get("FUNCPLANE_NON_HTTP_TRIGGERS", "enabled").lower()
                           not in ("disabled", "false", "0", "off")),
        state_dir=Path(env["FUNCPLANE_STATE_DIR"]) if env.get("FUNCPLANE_STATE_DIR") else None,
        worker_runtime=(env.get("FUNCTIONS_WORKER_RUNTIME") or None),
        worker_runtime_version=(env.get("FUNCTIONS_WORKER_RUNTIME_VERSION") or None),
        worker_process_count=_process_count(env),
        environment=env,
        access_log=bool(args.access_log) or env.get("FUNCPLANE_ACCESS_LOG", "").lower() in ("1", "true", "on"),
    )
