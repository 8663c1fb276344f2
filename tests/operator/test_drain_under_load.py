"""Pods going away under load: a client that follows the Service's EndpointSlices sends steady
traffic while one pod is deleted and the app is scaled from three replicas to one. Every request
must succeed: a deleted pod's host reports not ready at once but keeps serving for its drain grace
period, while the endpoints (and the client) catch up. Real operator, real hosts (pod runner)."""

from __future__ import annotations

from typing import Any

from funcplane_dev.stages import ANNOTATION_READY_AFTER
from funcplane_dev.traffic import pods_go_away
from swap_support import (  # noqa: F401 - fixtures used by name
    APP, Operator, Shop, manifests, operator, shop,
)
from support import eventually


def test_no_request_fails_while_pods_go_away(shop: Shop, operator: Operator, pod_runner: Any) -> None:
    code, _, app, _ = manifests(replicas=3)
    # A replacement pod turns Ready late (its host needs time to start), so the scale-down
    # removes it before it takes traffic; the hosts behind Ready pods answer from the start.
    app["spec"]["podAnnotations"] = {ANNOTATION_READY_AFTER: "15s"}
    shop.apply([code, app])
    eventually(lambda: shop.ready(slots=1), timeout=120, interval=0.5, what="app Ready")
    eventually(lambda: len(shop.endpoint_ips("production")) == 3, timeout=120, interval=0.5,
               what="three ready endpoints")

    report = pods_go_away(shop.cluster, shop.namespace, APP, "/api/whoami", threads=4, timeout=90)

    assert report.sent > 100, report
    assert report.failures == [], f"{len(report.failures)} of {report.sent} requests failed: {report.failures[:10]}"
    assert len(shop.endpoint_ips("production")) == 1
