"""What the host and operator images hold: their packages and entry point, labels, and nothing of
the build (pip, a compiler, sources) or of the development tools (funcplane_dev), and a product
command line that starts without them."""

from __future__ import annotations

import json
import subprocess

import pytest

from containers import output_of
from funcplane_dev.images import PODMAN, ULIMITS, image_config

PROBE = (
    "import importlib.util as u, json, os, shutil; "
    "print(json.dumps({'pip': shutil.which('pip') or shutil.which('pip3'), 'gcc': shutil.which('gcc'), "
    "'dev_tools': bool(u.find_spec('funcplane_dev')), 'protocol': bool(u.find_spec('funcplane_protocol')), "
    "'sources': os.path.exists('/src'), 'entry': shutil.which(os.environ['ENTRY'])}))"
)


@pytest.mark.parametrize(("image", "entry"), [("host", "funcplane-host"), ("operator", "funcplane-operator")])
def test_image_holds_its_entry_point_and_no_build_tools_or_dev_tools(built_images: dict[str, str], image: str,
                                                                       entry: str) -> None:
    reference = built_images[image]
    found = json.loads(output_of(reference, "--entrypoint", "python3", "--env", f"ENTRY={entry}",
                                 arguments=("-c", PROBE)))
    assert found == {"pip": None, "gcc": None, "dev_tools": False, "protocol": True, "sources": False,
                     "entry": f"/opt/funcplane/venv/bin/{entry}"}
    config = image_config(reference)
    assert config["Entrypoint"] == [entry]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.source"] == "https://github.com/funcplane/funcplane"
    assert labels["org.opencontainers.image.version"] == reference.rsplit(":", 1)[1]
    assert config["User"] not in ("", "0", "root")


def test_operator_image_command_line_runs_without_the_dev_tools(built_images: dict[str, str]) -> None:
    help_text = output_of(built_images["operator"], "--entrypoint", "funcplane", arguments=("--help",))
    assert "swap" in help_text and "crds" in help_text
    result = subprocess.run([*PODMAN, "run", "--rm", *ULIMITS, "--entrypoint", "funcplane", built_images["operator"],
                             "dev", "up"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "development tools (package funcplane_dev)" in result.stderr, result.stderr
