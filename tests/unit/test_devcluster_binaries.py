"""The binary cache trusts nothing it has not verified, and says what to do when it cannot build."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from funcplane_dev import binaries


def test_cached_binary_is_verified_by_digest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    etcd = binaries.COMPONENTS["etcd"]
    source = binaries.ensure_component(etcd, quiet=True).parent
    monkeypatch.setenv("FUNCPLANE_CACHE_DIR", str(tmp_path))
    shutil.copytree(source, etcd.directory)
    assert binaries._verified(etcd)

    with (etcd.bin_dir / "etcd").open("ab") as tampered:
        tampered.write(b"\0")
    assert not binaries._verified(etcd), "a binary whose digest changed must not be trusted"

    (etcd.directory / binaries.MANIFEST).unlink()
    assert not binaries._verified(etcd), "a binary without a manifest must not be trusted"


def test_missing_go_toolchain_is_one_actionable_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("FUNCPLANE_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(binaries.BinaryError, match=r"Go toolchain is not on PATH: install Go >= 1\.26"):
        binaries.ensure("etcd", quiet=True)


def test_unknown_binary_names_the_known_ones():
    with pytest.raises(binaries.BinaryError, match="known: .*kube-apiserver"):
        binaries.ensure("kube-router")
