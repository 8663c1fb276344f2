"""Reading the JSON files an app and a host carry (host.json, function.json, worker.config.json, keys).

One reader so that every file says the same thing when it is broken: which file, which line, what is
wrong. Callers wrap the message in their own error type, prefixed with what they were loading.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class JsonFileError(ValueError):
    """The file cannot be read, is not JSON, or does not hold an object."""


def read_json_object(path: Path, label: str | None = None) -> dict[str, Any]:
    """The JSON object in ``path`` (a UTF-8 byte-order mark is accepted, as editors on Windows write it)."""
    name = label or str(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8-sig"))
    except OSError as error:
        raise JsonFileError(f"{name} cannot be read ({error.strerror})") from None
    except UnicodeDecodeError as error:
        raise JsonFileError(f"{name} is not UTF-8 (byte {error.start})") from None
    except json.JSONDecodeError as error:
        raise JsonFileError(f"{name} is not valid JSON (line {error.lineno}: {error.msg})") from None
    if not isinstance(document, dict):
        raise JsonFileError(f"{name} must contain a JSON object")
    return document
