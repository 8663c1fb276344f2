"""kopf as the runtime configures it: state under the project's annotation prefix, and warnings
that handlers log about an object posted as Events on it (info is not)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from support import eventually
from ha_support import Replica, holder

STATEFUL_HANDLERS = '''
import kopf


@kopf.on.create("v1", "configmaps", labels={"test.funcplane.io/state": kopf.PRESENT})
def created(logger, **_):
    logger.info("configmap seen")
    logger.warning("configmap needs attention")
'''


def test_kopf_keeps_state_under_funcplane_io_and_posts_warnings_as_events(cluster: Any, namespace: str,
                                                                          tmp_path: Path) -> None:
    (tmp_path / "stateful_handlers.py").write_text(STATEFUL_HANDLERS)
    replica = Replica("kopf-settings", kubeconfig=cluster.kubeconfig, env=dict(cluster.env, PYTHONPATH=str(tmp_path)),
                      log_dir=tmp_path, scope=["--namespace", namespace], lease_namespace=namespace,
                      extra=("--handlers", "stateful_handlers"))
    try:
        eventually(lambda: holder(cluster, namespace) == "kopf-settings", timeout=60, what="the replica to lead")
        cluster.kubectl("-n", namespace, "create", "configmap", "subject", "--from-literal=k=v")
        cluster.kubectl("-n", namespace, "label", "configmap", "subject", "test.funcplane.io/state=yes")

        def annotations() -> dict[str, str]:
            body = json.loads(cluster.kubectl("-n", namespace, "get", "configmap", "subject", "-o", "json").stdout)
            return body["metadata"].get("annotations") or {}

        found = eventually(lambda: "funcplane.io/last-handled-configuration" in annotations() and annotations(),
                           timeout=60, what="kopf's diff-base annotation under funcplane.io")
        assert all(key.startswith("funcplane.io/") for key in found), found

        def events() -> list[dict[str, Any]]:
            listed = json.loads(cluster.kubectl("-n", namespace, "get", "events", "-o", "json").stdout)["items"]
            return [e for e in listed if e["involvedObject"].get("name") == "subject"]

        posted = eventually(lambda: [e for e in events() if "needs attention" in e.get("message", "")],
                            timeout=60, what="the handler's warning as an Event")
        assert posted[0]["type"] == "Warning"
        assert posted[0]["source"].get("component") == "funcplane-operator" or \
            posted[0].get("reportingComponent") == "funcplane-operator"
        assert not [e for e in events() if "configmap seen" in e.get("message", "")], "info must not become an Event"
    finally:
        replica.close()
