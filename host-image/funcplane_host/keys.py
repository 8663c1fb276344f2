"""Keys and auth levels: anonymous, function (function, host or master key), admin (master key)."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from funcplane_host.jsonfile import JsonFileError, read_json_object

KEY_HEADER = "x-functions-key"
KEY_QUERY = "code"


class KeysError(ValueError):
    """The keys file is unusable; the message names the field."""


def _key_map(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise KeysError(f"{where}: must map key names to key strings")
    return dict(value)


@dataclass(frozen=True)
class KeyStore:
    master_key: str | None = None
    host_keys: dict[str, str] = field(default_factory=dict)
    function_keys: dict[str, dict[str, str]] = field(default_factory=dict)
    system_keys: dict[str, str] = field(default_factory=dict)  # extensions' keys, e.g. durabletask_extension

    @classmethod
    def load(cls, keys_file: Path | None, master_key: str | None) -> KeyStore:
        document: dict[str, Any] = {}
        if keys_file is not None:
            try:
                document = read_json_object(keys_file, f"keys file {keys_file}")
            except JsonFileError as error:
                raise KeysError(str(error)) from None
        file_master = document.get("masterKey")
        if file_master is not None and not isinstance(file_master, str):
            raise KeysError(f"keys file {keys_file}: masterKey must be a string")
        functions = document.get("functions") or {}
        if not isinstance(functions, dict):
            raise KeysError(f"keys file {keys_file}: functions must map function names to key maps")
        return cls(
            master_key=master_key or file_master or None,
            host_keys=_key_map(document.get("functionKeys"), f"keys file {keys_file}: functionKeys"),
            function_keys={
                name.lower(): _key_map(keys, f"keys file {keys_file}: functions.{name}")
                for name, keys in functions.items()
            },
            system_keys=_key_map(document.get("systemKeys"), f"keys file {keys_file}: systemKeys"),
        )

    @property
    def empty(self) -> bool:
        return not (self.master_key or self.host_keys or any(self.function_keys.values()))

    def _matches(self, presented: str, candidates: Any) -> bool:
        encoded = presented.encode()
        return any(hmac.compare_digest(encoded, key.encode()) for key in candidates if key)

    def is_master(self, presented: str | None) -> bool:
        return bool(presented) and self.master_key is not None and self._matches(presented, [self.master_key])  # type: ignore[arg-type]

    def authorize(self, level: str, function_name: str, presented: str | None) -> bool:
        if level == "anonymous":
            return True
        if not presented:
            return False
        if self.is_master(presented):
            return True
        if level == "admin":
            return False
        keys = [*self.host_keys.values(), *self.function_keys.get(function_name.lower(), {}).values()]
        return self._matches(presented, keys)


def presented_key(request: web.Request) -> str | None:
    return request.headers.get(KEY_HEADER) or request.query.get(KEY_QUERY)
