"""Fixtures for the selection tests: a fresh store per test and record builders.

Artifacts are fake ONNX bytes: the store treats models as opaque bytes, so
nothing here needs a real model.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from selection import (
    HOST_DEVICE,
    CandidateRecord,
    DeviceResult,
    HoldoutRecord,
    Home,
    SliceRecord,
    Store,
    SweepRecord,
    sha256_bytes,
)
from tests.postgres import PG_SERVER, private_schema_url

T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


def fake_onnx(tag: str) -> bytes:
    """Distinct opaque bytes standing in for an ONNX file."""
    return b"\x08\x09fake-onnx-model:" + tag.encode()


class Factory:
    """Builds records and stores them in one test's store."""

    fake_onnx = staticmethod(fake_onnx)

    def __init__(self, store: Store) -> None:
        self.store = store
        self._tick = 0

    def _next_time(self) -> datetime:
        self._tick += 1
        return T0 + timedelta(seconds=self._tick)

    def sweep(
        self, sweep_id: str = "sw-1", *, config: dict[str, Any] | None = None, n_slices: int = 2,
        devices: tuple[str, ...] = (),
    ) -> SweepRecord:
        """Create and store a sweep with ``n_slices`` slices; later sweeps are newer."""
        record = SweepRecord(
            sweep_id=sweep_id,
            name=f"name-{sweep_id}",
            dataset="rainfall",
            dataset_fingerprint="fp-" + sweep_id,
            holdout=HoldoutRecord(start=900, stop=1000, rows_sha256="a" * 64),
            config=config if config is not None else {"families": ["mlp"], "seed": 7},
            n_planned=4,
            created_at=self._next_time(),
            devices=devices,
        )
        slices = [
            SliceRecord(
                sweep_id=sweep_id,
                slice_id=f"slice-{i}",
                strategy="recent",
                params={"window": 100 * (i + 1)},
                n_rows=100 * (i + 1),
                rows_sha256=str(i) * 64,
            )
            for i in range(n_slices)
        ]
        self.store.create_sweep(record, slices)
        return record

    def candidate(
        self,
        candidate_id: str,
        *,
        sweep_id: str = "sw-1",
        accuracy: float | None = 0.9,
        latency_ms: float | None = 1.0,
        size_bytes: int | None = 1000,
        status: str = "ok",
        devices: tuple[DeviceResult, ...] | None = None,
        store: bool = True,
    ) -> CandidateRecord:
        """Build (and by default store) a candidate with a host-cpu result and its artifact."""
        model = fake_onnx(candidate_id)
        sha = sha256_bytes(model)
        if devices is None:
            devices = (
                DeviceResult(
                    device=HOST_DEVICE,
                    status=status,  # type: ignore[arg-type]
                    error=None if status == "ok" else "boom",
                    accuracy=accuracy,
                    latency_ms=latency_ms,
                    host_latency_p50_ms=latency_ms,
                    host_latency_p99_ms=None if latency_ms is None else latency_ms * 2,
                    size_bytes=size_bytes,
                    artifact_sha256=sha,
                    emulator=None,
                    extra={"n_nodes": 12},
                ),
            )
        record = CandidateRecord(
            candidate_id=candidate_id,
            sweep_id=sweep_id,
            slice_id="slice-0",
            family="mlp",
            params={"hidden": 16, "lr": 0.01},
            seed=1234,
            status="ok",
            train_seconds=0.5,
            onnx_sha256=sha,
            lineage={
                "model_io": {
                    "input_name": "x",
                    "feature_columns": ["temp", "humidity"],
                    "class_labels": ["dry", "rain"],
                }
            },
            devices=devices,
            created_at=self._next_time(),
        )
        if store:
            self.store.add_candidate(record, {sha: model})
        return record


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home.resolve(tmp_path / "home")


@pytest.fixture
def store(home: Home, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    # Tests must not pick up a developer's own store.
    monkeypatch.delenv("SHADOW_STORE", raising=False)
    monkeypatch.delenv("SHADOW_HOME", raising=False)
    with Store.open(home) as opened:
        yield opened


@pytest.fixture
def make(store: Store) -> Factory:
    return Factory(store)


# -- every backend: the conformance suite runs unchanged on SQLite and PostgreSQL --

__all__ = ["PG_SERVER"]  # tests import the server's URL from here too


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_url(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str | None]:
    """None for the home's SQLite file, else a URL naming a private PostgreSQL schema.

    Each PostgreSQL test gets its own schema (search_path in the URL) and
    drops it afterwards, so tests never see each other's rows.
    """
    monkeypatch.delenv("SHADOW_STORE", raising=False)
    monkeypatch.delenv("SHADOW_HOME", raising=False)
    if request.param == "sqlite":
        yield None
        return
    with private_schema_url() as url:
        yield url


@pytest.fixture
def any_store(home: Home, backend_url: str | None) -> Iterator[Store]:
    """A fresh store on each backend in turn."""
    with Store.open(home, url=backend_url) as opened:
        yield opened


@pytest.fixture
def any_make(any_store: Store) -> Factory:
    return Factory(any_store)
