"""The Python worker ships apart from the host: a site extension holding only the worker and the
protocol package serves an app while the host's package cannot be imported in the worker.

The site extension is laid out as the worker image lays it out (host-image/workers/python/
Dockerfile): the launcher and its config at the top, `funcplane_pyworker/` and
`funcplane_protocol/` beside them. A guard in front of the launcher makes any import of
`funcplane_host` fail, so a worker that still needed the host could not start.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import BUNDLED_WORKERS, EXAMPLE_APPS, REPO

PACKAGES = ("funcplane_pyworker", "funcplane_protocol")
GUARD = '''\
import importlib.abc, runpy, sys

class RefuseHost(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "funcplane_host" or name.startswith("funcplane_host."):
            raise ModuleNotFoundError(f"{name} must not be imported by the worker", name=name)
        return None

sys.meta_path.insert(0, RefuseHost())
sys.argv[0] = sys.argv[0].replace("guarded_worker.py", "worker.py")
runpy.run_path(sys.argv[0], run_name="__main__")
'''


def _site_extension(target: Path) -> Path:
    shutil.copytree(BUNDLED_WORKERS / "python", target, ignore=shutil.ignore_patterns("__pycache__"))
    for package in PACKAGES:
        shutil.copytree(REPO / "host-image" / package, target / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyi", "*.proto", "generate.py"))
    (target / "guarded_worker.py").write_text(GUARD)
    config_path = target / "worker.config.json"
    config = json.loads(config_path.read_text())
    config["description"]["defaultWorkerPath"] = "guarded_worker.py"
    config_path.write_text(json.dumps(config))
    return target


def test_worker_serves_from_a_site_extension_without_the_host_package(start_host, tmp_path: Path) -> None:
    extension = _site_extension(tmp_path / "siteextensions" / "python")
    host = start_host(EXAMPLE_APPS / "hello-v2",
                      worker_config={"workers": {"python": {"path": str(extension), "enabled": True}}})
    (pool,) = host.admin("/admin/host/status")["workers"]
    assert (pool["source"], Path(pool["path"])) == ("managed", extension)
    reply = host.get("/api/hello?name=extension")
    assert reply.status == 200, f"{reply.status} {reply.text}\n{host.log_tail()}"
    assert "guarded_worker.py" in host.log()
    assert "must not be imported by the worker" not in host.log()


def test_guard_stops_a_worker_that_imports_the_host(start_host, tmp_path: Path) -> None:
    """The guard is real: a site extension whose worker imports `funcplane_host` never gets ready."""
    extension = _site_extension(tmp_path / "siteextensions" / "python")
    main = extension / "funcplane_pyworker" / "main.py"
    main.write_text(main.read_text() + "\nimport funcplane_host.settings\n")
    host = start_host(EXAMPLE_APPS / "hello-v2", wait_ready=False,
                      worker_config={"workers": {"python": {"path": str(extension), "enabled": True}}})
    host.wait_until(lambda: "must not be imported by the worker" in host.log(),
                    "the worker to fail on its funcplane_host import")
    assert host.get("/readyz").status == 503
