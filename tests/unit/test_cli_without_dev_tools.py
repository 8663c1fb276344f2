"""The product command line needs nothing of the development tools: with `funcplane_dev` missing,
as in the images, `funcplane` and `kubectl funcplane` run, and `dev`/`demo` say where to get them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# A finder in front of all others fails every import of funcplane_dev as one where it is not installed.
WITHOUT_DEV_TOOLS = (
    "import sys\n"
    "class NoDevTools:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.partition('.')[0] == 'funcplane_dev':\n"
    "            raise ModuleNotFoundError(\"No module named 'funcplane_dev'\", name='funcplane_dev')\n"
    "sys.meta_path.insert(0, NoDevTools())\n"
)


def python(code: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *arguments], capture_output=True, text=True, timeout=60)


def test_funcplane_and_kubectl_plugin_run_without_the_dev_tools() -> None:
    for entry in ("main", "kubectl_plugin"):
        result = python(WITHOUT_DEV_TOOLS + f"from funcplane.cli.main import {entry}; sys.exit({entry}())", "--help")
        assert result.returncode == 0, result.stderr
        assert "swap" in result.stdout and "crds" in result.stdout, result.stdout
    swap_help = python(WITHOUT_DEV_TOOLS + "from funcplane.cli.main import main; sys.exit(main())", "swap", "--help")
    assert swap_help.returncode == 0 and "--slot" in swap_help.stdout, swap_help.stdout + swap_help.stderr


def test_dev_commands_without_the_dev_tools_fail_with_where_to_get_them() -> None:
    for command in (["dev", "up"], ["demo", "--down"]):
        result = python(WITHOUT_DEV_TOOLS + "from funcplane.cli.main import main; sys.exit(main())", *command)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "development tools (package funcplane_dev)" in result.stderr and "make venv" in result.stderr, \
            result.stderr
        assert "Traceback" not in result.stderr, result.stderr


def test_product_commands_do_not_import_the_dev_tools() -> None:
    code = ("import contextlib, sys; from funcplane.cli.main import main\n"
            "for argv in (['--help'], ['swap', '--help'], ['crds', '--help']):\n"
            "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(None): main(argv)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'funcplane_dev'))")
    result = python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout


def test_dev_and_demo_reach_the_dev_tools_from_a_source_checkout() -> None:
    funcplane = Path(sys.executable).with_name("funcplane")
    assert funcplane.exists(), f"{funcplane} is missing: install the project (make venv)"
    for command, expected in ((["dev", "--help"], "port-forward"), (["dev", "cluster", "--help"], "kubeconfig"),
                              (["demo", "--help"], "--down")):
        result = subprocess.run([str(funcplane), *command], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        assert expected in result.stdout, result.stdout
