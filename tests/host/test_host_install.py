"""The image's install steps (host-image/install.sh, run by the Dockerfile) produce a working host.

The test copies the same source paths the Dockerfile copies, runs the script into a temp venv and
workers dir, then serves an app with the installed `funcplane-host` and the installed worker.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import EXAMPLE_APPS, REPO

from funcplane_host.settings import IMAGE_WORKERS_DIR

DOCKERFILE = REPO / "host-image" / "Dockerfile"


def _dockerfile_copies() -> list[str]:
    sources = []
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            sources.extend(shlex.split(line)[1:-1])
    # A file inside a directory that is copied as well comes with that directory.
    return [name for name in sources if not any(name.startswith(f"{other}/") for other in sources)]


def test_dockerfile_installs_with_the_script_into_the_image_layout() -> None:
    text = DOCKERFILE.read_text()
    run = re.search(r"RUN sh /src/host-image/install.sh (.*?)\\\n\s*(.*?)\\", text, re.S)
    assert run, "the Dockerfile must install with host-image/install.sh"
    arguments = shlex.split(run.group(1) + " " + run.group(2))
    options = dict(zip(arguments[::2], arguments[1::2], strict=True))
    assert options["--workers-dir"] == str(IMAGE_WORKERS_DIR)
    assert "USER 10001" in text and 'ENTRYPOINT ["funcplane-host"]' in text
    assert set(_dockerfile_copies()) == {"pyproject.toml", "README.md", "operator", "host-image"}


def test_install_script_builds_a_host_that_serves(tmp_path: Path, start_host) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for name in _dockerfile_copies():
        origin = REPO / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(origin, source / name)
    venv, workers = tmp_path / "venv", tmp_path / "workers"
    result = subprocess.run(
        ["sh", str(source / "host-image" / "install.sh"), "--source", str(source), "--venv", str(venv),
         "--workers-dir", str(workers), "--python", sys.executable],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, f"install.sh failed:\n{result.stdout}\n{result.stderr}"
    assert (workers / "python" / "worker.config.json").is_file()
    installed = venv / "bin" / "funcplane-host"
    assert installed.is_file()
    host = start_host(EXAMPLE_APPS / "hello-v1", workers_dir=workers, command=installed)
    assert host.get("/api/HttpTrigger?name=image").text == "Hello, image!"
    assert f"{venv}/bin/python3" in host.log()  # the worker ran on the installed interpreter


def test_install_script_rejects_missing_arguments(tmp_path: Path) -> None:
    result = subprocess.run(["sh", str(REPO / "host-image" / "install.sh"), "--source", str(REPO)],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "--venv VENV_DIR is required" in result.stderr
