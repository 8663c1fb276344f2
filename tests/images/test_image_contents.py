"""What the host and operator images hold: their packages and entry point, labels, and nothing of
the build (pip, a compiler, sources) or of the dev cluster."""

from __future__ import annotations

import json

import pytest

from containers import output_of
from funcplane.devcluster.images import image_config

PROBE = (
    "import importlib.util as u, json, os, shutil; "
    "print(json.dumps({'pip': shutil.which('pip') or shutil.which('pip3'), 'gcc': shutil.which('gcc'), "
    "'devcluster': [m for m in ('funcplane.devcluster', 'funcplane.cli.devcluster', 'funcplane.cli.demo') "
    "if u.find_spec(m)], 'protocol': bool(u.find_spec('funcplane_protocol')), "
    "'sources': os.path.exists('/src'), 'entry': shutil.which(os.environ['ENTRY'])}))"
)


@pytest.mark.parametrize(("image", "entry"), [("host", "funcplane-host"), ("operator", "funcplane-operator")])
def test_image_holds_its_entry_point_and_no_build_tools_or_dev_cluster(built_images: dict[str, str], image: str,
                                                                        entry: str) -> None:
    reference = built_images[image]
    found = json.loads(output_of(reference, "--entrypoint", "python3", "--env", f"ENTRY={entry}",
                                 arguments=("-c", PROBE)))
    assert found == {"pip": None, "gcc": None, "devcluster": [], "protocol": True, "sources": False,
                     "entry": f"/opt/funcplane/venv/bin/{entry}"}
    config = image_config(reference)
    assert config["Entrypoint"] == [entry]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.source"] == "https://github.com/funcplane/funcplane"
    assert labels["org.opencontainers.image.version"] == reference.rsplit(":", 1)[1]
    assert config["User"] not in ("", "0", "root")
