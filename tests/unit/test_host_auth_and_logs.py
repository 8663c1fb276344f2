"""Keys/auth levels, log category levels and the install requirements list."""

from __future__ import annotations

import json
import logging
import re
import tomllib
from pathlib import Path

import pytest

from funcplane_host.keys import KeysError, KeyStore
from funcplane_host.logs import TRACE, CategoryLevels

REPO = Path(__file__).resolve().parents[2]


def test_key_levels(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(json.dumps({"masterKey": "m", "functionKeys": {"default": "h"},
                                     "functions": {"Orders": {"default": "o"}}}))
    store = KeyStore.load(keys_file, None)
    assert store.authorize("anonymous", "x", None)
    assert store.authorize("function", "orders", "o") and store.authorize("function", "x", "h")
    assert not store.authorize("function", "x", "o") and not store.authorize("function", "x", None)
    assert store.authorize("admin", "x", "m") and not store.authorize("admin", "x", "h")
    assert KeyStore.load(keys_file, "env-master").master_key == "env-master"
    assert KeyStore.load(None, None).empty


def test_bad_keys_file_names_the_field(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(json.dumps({"functionKeys": {"default": 5}}))
    with pytest.raises(KeysError, match="functionKeys: must map key names to key strings"):
        KeyStore.load(keys_file, None)


def test_category_levels_longest_prefix() -> None:
    levels = CategoryLevels({"default": "Warning", "Function": "Information", "Function.noisy": "None",
                             "Function.debugged.User": "Trace"})
    assert levels.level_for("Host.Startup") == logging.WARNING
    assert levels.level_for("Function.orders.User") == logging.INFO
    assert not levels.enabled("Function.noisy.User", logging.CRITICAL)
    assert levels.enabled("Function.debugged.User", TRACE)
    with pytest.raises(ValueError, match="logLevel.Function: 'Loud' is not a level"):
        CategoryLevels({"Function": "Loud"})


def test_image_requirements_are_project_dependencies() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    lines = [line.strip() for line in (REPO / "host-image" / "requirements.txt").read_text().splitlines()]
    requirements = [line for line in lines if line and not line.startswith("#")]
    assert requirements and set(requirements) <= set(project), set(requirements) - set(project)
    assert all(re.match(r"^[A-Za-z0-9_.-]+(\[[a-z,]+\])?[<>=]", line) for line in requirements)
