"""Real nodes' pure parts: where kube-proxy's nat rules send a ClusterIP, and the node's config."""

from __future__ import annotations

from pathlib import Path

import pytest

from funcplane_dev import realnode

NAT = """*nat
:KUBE-SERVICES - [0:0]
:KUBE-SVC-AAA - [0:0]
:KUBE-SEP-ONE - [0:0]
:KUBE-SEP-TWO - [0:0]
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A KUBE-SERVICES -d 10.96.7.8/32 -p tcp -m comment --comment "ns/shop:http cluster IP" -m tcp --dport 80 -j KUBE-SVC-AAA
-A KUBE-SERVICES -d 10.96.7.9/32 -p tcp -m comment --comment "ns/other:http cluster IP" -m tcp --dport 80 -j KUBE-SVC-BBB
-A KUBE-SVC-AAA -m comment --comment "ns/shop:http -> 10.214.8.2:8080" -m statistic --mode random --probability 0.5 -j KUBE-SEP-ONE
-A KUBE-SVC-AAA -m comment --comment "ns/shop:http -> 10.214.8.3:8080" -j KUBE-SEP-TWO
-A KUBE-SEP-ONE -p tcp -m comment --comment "ns/shop:http" -m tcp -j DNAT --to-destination 10.214.8.2:8080
-A KUBE-SEP-TWO -p tcp -m comment --comment "ns/shop:http" -m tcp -j DNAT --to-destination 10.214.8.3:8080
COMMIT
"""


def test_dnat_targets_follow_the_service_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(realnode, "_run", lambda argv, **_: type("Done", (), {"stdout": NAT})())
    assert realnode.service_dnat_targets("10.96.7.8", 80) == {"10.214.8.2:8080", "10.214.8.3:8080"}
    assert realnode.service_dnat_targets("10.96.7.8", 443) == set()
    assert realnode.service_dnat_targets("10.96.7.9", 80) == set()  # a Service chain with no endpoint rule


def test_no_request_goes_to_a_vip_without_local_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(realnode, "_run", lambda argv, **_: type("Done", (), {"stdout": NAT})())
    with pytest.raises(realnode.RealNodeError, match="no request sent to 10.96.7.9:80"):
        realnode.VipClient("10.96.7.9", 80, wait=0.3)
    assert realnode.VipClient("10.96.7.8", 80, wait=0.3).vip == realnode.Vip("10.96.7.8", 80)


def test_nodes_of_clusters_side_by_side_get_their_own_bridge_and_subnet(tmp_path: Path) -> None:
    nodes = [realnode.RealNode(i, c, tmp_path) for c in (0, 15) for i in range(realnode.MAX_NODES)]
    assert len({n.bridge for n in nodes}) == len({n.subnet for n in nodes}) == len(nodes)
    assert all(len(n.bridge) <= 15 and n.subnet.subnet_of(realnode.REAL_POD_NETWORK) for n in nodes)
    # The kubelet leaves the machine's kube-proxy settings and sysctls alone where it can.
    proxy = realnode.kube_proxy_config(nodes[0], tmp_path / "kubeconfig", 1, 2)
    assert proxy["iptables"]["localhostNodePorts"] is False and proxy["conntrack"]["maxPerCore"] == 0
    cni = realnode.cni_config(nodes[0])["plugins"][0]
    assert cni["isGateway"] is False and cni["ipMasq"] is False  # no forwarding sysctl, no nat rules


def test_one_cluster_at_a_time_may_have_real_nodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FUNCPLANE_CACHE_DIR", str(tmp_path))
    realnode.lease(tmp_path / "a", alive=lambda _: True)
    with pytest.raises(realnode.RealNodeError, match="one cluster at a time"):
        realnode.lease(tmp_path / "b", alive=lambda _: True)
    realnode.lease(tmp_path / "b", alive=lambda _: False)  # a stopped cluster's lease is taken over
    realnode.release(tmp_path / "a")  # not the holder: nothing changes
    assert (tmp_path / "real-nodes.lease").read_text() == str(tmp_path / "b")


def test_down_of_a_cluster_that_never_took_the_lease_touches_nothing(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(realnode, "_run", lambda argv, **_: calls.append(argv))
    cluster = type("Cluster", (), {"directory": tmp_path, "real_nodes": 1, "pod_cidr": "10.213.0.0/20"})()
    realnode.teardown(cluster)  # type: ignore[arg-type]
    assert calls == []  # no kube-proxy --cleanup, no iptables: another cluster's rules stay


def test_the_demo_on_a_real_node_steers_its_app_there_and_copies_its_worker() -> None:
    from funcplane_dev import demo

    simulated = demo.manifests(0)
    assert [d["kind"] for d in simulated] == ["FunctionApp", "Slot"]
    app = simulated[0]["spec"]
    assert "nodeSelector" not in app and "tolerations" not in app, "the example itself stays portable"

    workers, real_app, slot = demo.manifests(1)
    spec = real_app["spec"]
    assert spec["nodeSelector"] == {realnode.NODE_LABEL[0]: realnode.NODE_LABEL[1]}
    assert spec["tolerations"] == [{"key": realnode.TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}]
    assert spec["imagePullPolicy"] == "Never" and spec["image"] in realnode.node_image_references()
    assert {k: v for k, v in spec.items() if k not in realnode.app_on_real_nodes()} == \
        {k: v for k, v in app.items() if k != "image"}, "only the real-node fields change"
    assert slot == simulated[1]
    (worker,) = workers["spec"]["workers"]
    source = worker["source"]["image"]
    assert source["reference"] in realnode.node_image_references() and source["reference"].endswith("-copy")
    assert (source["path"], source["pullPolicy"]) == (realnode.COPY_FILES_DIR, "Never")
