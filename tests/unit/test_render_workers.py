"""WorkerConfig rendering: language match, enabled, gray release, image vs copy mode."""

from __future__ import annotations

import json

from funcplane.render.volumes import VolumeMode


def worker_file(objects, app, slice_name="main"):
    return json.loads(objects[("ConfigMap", f"{app.status.active_instance}-workers")]["data"][f"{slice_name}.json"])


def test_worker_mounted_only_into_apps_of_its_language(
        function_app, worker_config, worker, rendered, deployment_of) -> None:
    config = worker_config(worker("py", "python", arguments=["--x"]), worker("js", "node"))
    python_app = function_app()
    objects = rendered(python_app, workers=[config])
    pod = deployment_of(objects, python_app)["spec"]["template"]["spec"]
    mounts = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert "/siteextensions/py" in mounts and "/siteextensions/js" not in mounts
    assert worker_file(objects, python_app) == {"workers": {"py": {
        "path": "/siteextensions/py", "enabled": True, "language": "python", "arguments": ["--x"]}}}
    volume = next(v for v in pod["volumes"] if v["name"] == "worker-py")
    assert volume["image"]["reference"] == "py:1"


def test_disabled_worker_is_removed(function_app, worker_config, worker, rendered, deployment_of) -> None:
    app = function_app()
    objects = rendered(app, workers=[worker_config(worker("py", enabled=False))])
    assert worker_file(objects, app) == {"workers": {}}
    pod = deployment_of(objects, app)["spec"]["template"]["spec"]
    assert not any(v["name"] == "worker-py" for v in pod["volumes"])


def test_copy_mode_uses_an_init_container_and_an_empty_dir(
        function_app, worker_config, worker, rendered, deployment_of) -> None:
    app = function_app()
    objects = rendered(app, workers=[worker_config(worker("py"))], mode=VolumeMode.COPY)
    pod = deployment_of(objects, app)["spec"]["template"]["spec"]
    assert next(v for v in pod["volumes"] if v["name"] == "worker-py") == {"name": "worker-py", "emptyDir": {}}
    copiers = {c["name"]: c for c in pod["initContainers"]}
    assert copiers["copy-worker-py"]["image"] == "py:1"
    assert copiers["copy-code"]["image"] == "code:1"


def test_rollout_fraction_splits_the_instance_into_a_gray_slice(
        function_app, worker_config, worker, rendered, deployment_of) -> None:
    app = function_app(replicas=4)
    objects = rendered(app, workers=[worker_config(worker("py", rolloutFraction=0.25))])
    main, gray = deployment_of(objects, app), deployment_of(objects, app, suffix="-gray")
    assert (main["spec"]["replicas"], gray["spec"]["replicas"]) == (3, 1)
    assert worker_file(objects, app, "main") == {"workers": {}}
    assert "py" in worker_file(objects, app, "gray")["workers"]


def test_changing_a_worker_leaves_other_languages_untouched(
        function_app, worker_config, worker, rendered, deployment_of) -> None:
    node_app = function_app(name="web", runtime={"name": "node"})
    before = deployment_of(rendered(node_app, workers=[worker_config(worker("py", version="1"))]), node_app)
    node_app = function_app(name="web", runtime={"name": "node"})
    after = deployment_of(rendered(node_app, workers=[worker_config(worker("py", version="2"))]), node_app)
    assert before == after


def test_oldest_worker_config_wins_a_name_clash(worker_config, worker) -> None:
    from funcplane.render.workers import declared_workers
    old = worker_config(worker("py", version="old"), name="a", created="2026-01-01T00:00:00Z")
    new = worker_config(worker("py", version="new"), name="b", created="2026-02-01T00:00:00Z")
    assert [w.version for w in declared_workers([new, old])] == ["old"]
