"""The import layers written down in `.importlinter` hold, and a new cycle would break them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from support import REPO

CONFIG = REPO / ".importlinter"
PACKAGES = (REPO / "operator" / "funcplane", REPO / "host-image" / "funcplane_host")


def lint_imports(cwd: Path, extra_path: Path | None = None) -> subprocess.CompletedProcess[str]:
    command = Path(sys.executable).with_name("lint-imports")
    assert command.exists(), f"{command} is missing: install the test extra (pip install -e '.[test]')"
    env = dict(os.environ)
    if extra_path is not None:  # the copied packages come first, before the installed ones
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(extra_path), env.get("PYTHONPATH")]))
    return subprocess.run([str(command), "--config", str(CONFIG), "--no-cache"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_import_layers_are_kept() -> None:
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def lint_with_an_added_import(tmp_path: Path, module: str, statement: str) -> str:
    """Lint a copy of the packages in which `module` (a path below them) ends with `statement`; its output."""
    for package in PACKAGES:
        shutil.copytree(package, tmp_path / package.name, ignore=shutil.ignore_patterns("__pycache__"))
    source = tmp_path / module
    source.write_text(source.read_text() + f"\n{statement}  # noqa\n")
    result = lint_imports(tmp_path, extra_path=tmp_path)
    assert result.returncode != 0, result.stdout + result.stderr
    assert "BROKEN" in result.stdout, result.stdout
    return result.stdout


def test_an_import_from_a_higher_layer_breaks_the_contract(tmp_path: Path) -> None:
    # The cycle this layering removed: the client plumbing reaching back up into the reconcilers.
    output = lint_with_an_added_import(tmp_path, "funcplane/kube/store.py",
                                       "from funcplane.controllers import context as _context")
    assert "Operator: command line > reconcilers" in output, output
    assert "funcplane.kube.store -> funcplane.controllers.context" in output, output


def test_a_product_import_of_the_dev_tools_breaks_the_contract(tmp_path: Path) -> None:
    output = lint_with_an_added_import(tmp_path, "funcplane/cli/main.py", "from funcplane_dev import cluster as _cluster")
    assert "The product never imports the development tools" in output, output
    assert "funcplane.cli.main -> funcplane_dev.cluster" in output, output


def test_a_host_import_of_the_http_server_breaks_the_contract(tmp_path: Path) -> None:
    # One of the cycles the host layering removed: the host reaching up into its HTTP server for the keys.
    output = lint_with_an_added_import(tmp_path, "funcplane_host/host.py",
                                       "from funcplane_host.http import server as _server")
    assert "Host: entry point > HTTP server > host" in output, output
    assert "funcplane_host.host -> funcplane_host.http.server" in output, output


def test_an_extension_naming_the_host_breaks_the_contract(tmp_path: Path) -> None:
    # The extensions are handed the host as the protocols of services.py; naming FunctionHost, even for
    # an annotation only, is the cycle those protocols removed.
    output = lint_with_an_added_import(tmp_path, "funcplane_host/timers/scheduler.py",
                                       "from funcplane_host.host import FunctionHost as _FunctionHost")
    assert "Host: entry point > HTTP server > host" in output, output
    assert "funcplane_host.timers.scheduler -> funcplane_host.host" in output, output
