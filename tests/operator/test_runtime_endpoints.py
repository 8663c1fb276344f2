"""/healthz and /metrics of a real operator process, and liveness that follows kopf's own loop.

A handlers module written here blocks kopf's event loop when a labelled ConfigMap appears, which is
what a broken handler does; the process's main loop (Lease, endpoints) keeps running, and /healthz
must say that the operator loop is stuck, then recover when it runs again.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from support import eventually
from ha_support import Replica, holder

BLOCKING_HANDLERS = '''
import time
import kopf

from funcplane.controllers.metrics import observe_reconcile


@kopf.on.event("v1", "configmaps", labels={"test.funcplane.io/block": kopf.PRESENT})
async def block(body, **_):
    with observe_reconcile("ConfigMap"):
        # Blocking call inside an async handler: stalls kopf's event loop on purpose.
        time.sleep(float(body["metadata"]["labels"]["test.funcplane.io/block"]))
'''


def test_health_follows_the_operator_loop_and_metrics_count_reconciles(cluster: Any, namespace: str,
                                                                       tmp_path: Path) -> None:
    (tmp_path / "blocking_handlers.py").write_text(BLOCKING_HANDLERS)
    env = dict(cluster.env, PYTHONPATH=str(tmp_path))
    standby_lease_holder = Replica("standby-probe", kubeconfig=cluster.kubeconfig, env=env, log_dir=tmp_path,
                                   scope=["--namespace", namespace], lease_namespace=namespace,
                                   extra=("--handlers", "blocking_handlers"))
    replica = None
    try:
        eventually(lambda: holder(cluster, namespace) == "standby-probe", timeout=60, what="the first replica to lead")
        replica = Replica("probed", kubeconfig=cluster.kubeconfig, env=env, log_dir=tmp_path,
                          scope=["--namespace", namespace], lease_namespace=namespace,
                          extra=("--handlers", "blocking_handlers"))
        # A standby is live (it talks to the API) and reports who leads.
        status, body = eventually(replica.health, timeout=30, what="the standby's /healthz")
        assert status == 200 and body["leader"] is False
        eventually(lambda: (replica.health() or (0, {}))[1].get("holder") == "standby-probe", timeout=30,
                   what="the standby to see the holder")
        standby_lease_holder.signal(signal.SIGTERM)
        assert standby_lease_holder.wait() == 0
        eventually(lambda: (replica.health() or (0, {}))[1].get("operator_ready") is True, timeout=60,
                   what="the new leader's operator loop to be ready")
        status, body = replica.health() or (0, {})
        assert status == 200 and body["leader"] is True and body["operator_running"] is True

        cluster.kubectl("-n", namespace, "create", "configmap", "stall")
        cluster.kubectl("-n", namespace, "label", "configmap", "stall", "test.funcplane.io/block=15")
        stalled = eventually(lambda: (replica.health() or (0, {}))[0] == 503, timeout=30,
                             what="/healthz to report the stalled operator loop")
        assert stalled
        # The Lease lives on the main loop: a stalled handler does not cost the leadership.
        assert holder(cluster, namespace) == "probed"
        eventually(lambda: (replica.health() or (0, {}))[0] == 200, timeout=60,
                   what="/healthz to recover once the loop runs again")

        values = replica.metrics() or {}
        assert values.get('funcplane_reconciles_total{kind=ConfigMap,result=success}') == 1
        assert values.get('funcplane_reconcile_duration_seconds_count{kind=ConfigMap}') == 1
        assert values.get('funcplane_reconcile_duration_seconds_sum{kind=ConfigMap}', 0) >= 15
        assert values.get("funcplane_leader") == 1
    finally:
        standby_lease_holder.close()
        if replica is not None:
            replica.close()
