# One-command setup: every target installs what it needs (virtualenv, packages, cluster binaries).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The stamp is keyed by pyproject.toml's content, so a dependency change reinstalls.
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: venv binaries postgresql image-tools real-node-tools images azurite test demo demo-real cluster-up cluster-down bench crds clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test]'
	@rm -f $(VENV)/.installed-*; touch $@

venv: $(STAMP)

# Kubernetes, etcd, kwok and helm, built once from Go modules into ~/.cache/funcplane/.
binaries: venv
	$(BIN)/funcplane dev binaries kubernetes etcd kwok helm

# Debian's PostgreSQL server for the durable shared-store tests (each run starts its own on loopback).
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null)

# podman (runtime runc) and mmdebstrap from Debian, for the images and their tests; once.
image-tools:
	@if command -v podman >/dev/null && command -v runc >/dev/null && command -v mmdebstrap >/dev/null; then :; \
	elif command -v apt-get >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
			podman runc mmdebstrap uidmap; \
	else echo "image-tools: podman, runc and mmdebstrap are missing and apt-get is not available;" \
		"the image tests will fail until they are installed" >&2; fi

# Real nodes (`funcplane dev cluster up --real-nodes N`): containerd, runc, the CNI plugins and nft
# from Debian, and the kubelet and kube-proxy built like the control plane; once.
real-node-tools: binaries
	@if command -v containerd >/dev/null && command -v runc >/dev/null && command -v nft >/dev/null && \
		test -x /usr/lib/cni/bridge; then :; \
	elif command -v apt-get >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
			containerd runc containernetworking-plugins nftables iptables; \
	else echo "real-node-tools: containerd, runc, containernetworking-plugins and nftables are missing and" \
		"apt-get is not available; the real-node tests will fail until they are installed" >&2; fi
	$(BIN)/funcplane dev binaries kubernetes-node

# The host, Python worker and operator images (cached: seconds when nothing changed).
images: venv image-tools
	$(BIN)/funcplane dev images

# Azurite (the Azure Storage emulator) from npm into ~/.cache/funcplane/: the queue trigger's broker.
azurite: venv
	$(BIN)/funcplane dev azurite

test: binaries postgresql image-tools real-node-tools azurite
	$(BIN)/pytest

demo: binaries
	$(BIN)/funcplane demo

# The same demo on a real node (root): the app in containers of the host image, traffic through ClusterIPs.
demo-real: real-node-tools image-tools
	$(BIN)/funcplane demo --real-nodes 1

cluster-up: binaries
	$(BIN)/funcplane dev cluster up

cluster-down: venv
	$(BIN)/funcplane dev cluster down

crds: venv
	$(BIN)/funcplane crds generate

bench: binaries azurite
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info
