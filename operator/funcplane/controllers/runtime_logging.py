"""Structured logs: one JSON object per line (the default), or plain text for a terminal."""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import Any

LOG_FORMATS = ("json", "plain")

# Attributes every LogRecord has; anything else on a record came from `extra=` and is logged.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}
# kopf attaches these to per-object records; the object reference is logged, the rest is internal.
_KOPF_INTERNAL = {"k8s_ref", "k8s_skip", "settings"}


class JsonFormatter(logging.Formatter):
    def __init__(self, identity: str) -> None:
        super().__init__()
        self.identity = identity

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "identity": self.identity,
        }
        reference = getattr(record, "k8s_ref", None)
        if isinstance(reference, dict):
            entry["object"] = {key: reference[key] for key in ("kind", "namespace", "name") if reference.get(key)}
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in _KOPF_INTERNAL and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class PlainFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s %(object)s%(message)s")

    def format(self, record: logging.LogRecord) -> str:
        reference = getattr(record, "k8s_ref", None)
        record.object = (f"[{reference.get('namespace') or '-'}/{reference.get('name')}] "
                         if isinstance(reference, dict) else "")
        return super().format(record)


class _DropKopfThreadWarning(logging.Filter):
    """kopf warns that it ignores OS signals when not on the main thread; the runtime handles them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("OS signals are ignored")


def configure(*, log_format: str, level: str, identity: str) -> None:
    if log_format not in LOG_FORMATS:
        raise SystemExit(f"--log-format {log_format!r}: use one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(identity) if log_format == "json" else PlainFormatter())
    handler.addFilter(_DropKopfThreadWarning())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    try:
        root.setLevel(level.upper())
    except ValueError as error:
        raise SystemExit(f"--log-level {level!r}: use debug, info, warning or error") from error
    # The HTTP client libraries are chatty and say nothing an operator user needs; kopf logs a
    # line per handled watch event, so its per-object loggers speak at info only when debugging.
    for noisy in ("urllib3", "aiohttp.access", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    logging.getLogger("kopf.objects").setLevel(logging.DEBUG if root.level <= logging.DEBUG else logging.WARNING)
