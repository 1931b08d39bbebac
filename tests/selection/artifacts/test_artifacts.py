"""ArtifactStore and the atomic file helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from selection.artifacts.content import ArtifactStore, sha256_bytes
from selection.atomic import replace_symlink_atomic, write_bytes_atomic
from selection.errors import ConfigError, IntegrityError, NotFoundError

DATA = b"\x08\x09some onnx bytes" * 10


def test_put_stores_under_sha_and_reads_back(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts")
    sha = store.put(DATA)
    assert sha == sha256_bytes(DATA)
    assert store.path(sha) == tmp_path / "artifacts" / sha
    assert store.path(sha).read_bytes() == DATA
    assert store.read_verified(sha) == DATA


def test_put_is_idempotent_and_leaves_no_temp_files(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    first = store.put(DATA, expected_sha256=sha256_bytes(DATA))
    mtime = store.path(first).stat().st_mtime_ns
    assert store.put(DATA) == first
    assert store.path(first).stat().st_mtime_ns == mtime  # not rewritten
    assert os.listdir(tmp_path) == [first]


def test_put_with_wrong_expected_sha_raises_and_writes_nothing(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "a")
    wrong = "0" * 64
    with pytest.raises(IntegrityError, match="declared '0{64}'"):
        store.put(DATA, expected_sha256=wrong)
    assert not (tmp_path / "a").exists() or os.listdir(tmp_path / "a") == []


def test_tampered_artifact_is_rejected(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    sha = store.put(DATA)
    flipped = bytearray(DATA)
    flipped[3] ^= 0xFF
    store.path(sha).write_bytes(bytes(flipped))
    with pytest.raises(IntegrityError, match="tampered with or truncated"):
        store.read_verified(sha)


def test_truncated_artifact_is_rejected(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    sha = store.put(DATA)
    store.path(sha).write_bytes(DATA[: len(DATA) // 2])
    with pytest.raises(IntegrityError, match=f"its {len(DATA) // 2} bytes hash to"):
        store.read_verified(sha)


def test_put_repairs_a_damaged_file(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    sha = store.put(DATA)
    store.path(sha).write_bytes(b"garbage")
    assert store.put(DATA) == sha
    assert store.read_verified(sha) == DATA


def test_missing_artifact_is_not_found(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    with pytest.raises(NotFoundError, match="is not in the artifact store"):
        store.read_verified("ab" * 32)


@pytest.mark.parametrize("bad", ["../../etc/passwd", "AB" * 32, "ab" * 31, ""])
def test_malformed_sha_never_becomes_a_path(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigError, match="64 lowercase hex digits"):
        ArtifactStore(tmp_path).path(bad)


def test_write_bytes_atomic_replaces_content(tmp_path: Path) -> None:
    target = tmp_path / "f.bin"
    write_bytes_atomic(target, b"one")
    write_bytes_atomic(target, b"two")
    assert target.read_bytes() == b"two"
    assert os.listdir(tmp_path) == ["f.bin"]
    assert target.stat().st_mode & 0o777 == 0o644


def test_replace_symlink_atomic_creates_and_swaps(tmp_path: Path) -> None:
    (tmp_path / "v1").mkdir()
    (tmp_path / "v2").mkdir()
    link = tmp_path / "current"
    replace_symlink_atomic(link, "v1")
    assert os.readlink(link) == "v1"
    replace_symlink_atomic(link, "v2")
    assert os.readlink(link) == "v2"
    assert sorted(os.listdir(tmp_path)) == ["current", "v1", "v2"]

