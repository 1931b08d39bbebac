"""The hot-swap runtime on real ONNX models: load, verify, swap, refuse."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from selection import Store, promote, rollback
from selection.runtime import (
    BadInputError,
    ChannelRuntime,
    ModelLoadError,
    NoModelError,
    load_version,
    parse_rows,
)
from selection.testing import FEATURES, add_tiny_candidates

ROW = [0.5] * len(FEATURES)


@pytest.fixture
def tiny(store: Store) -> Store:
    add_tiny_candidates(store, ["c-a", "c-b", "c-c"])
    promote(store, "c-a")
    return store


def _runtime(store: Store, **kwargs: object) -> ChannelRuntime:
    runtime = ChannelRuntime(store.home.channels_dir, "production", reload=False, **kwargs)
    runtime.start()
    return runtime


def _version(store: Store) -> Path:
    return store.home.channel_dir("production").resolve()


def test_serves_the_channel_model_with_its_identity(tiny: Store) -> None:
    runtime = _runtime(tiny)
    answer = runtime.predict({"rows": [ROW, dict(zip(FEATURES, ROW))]})
    assert answer["candidate_id"] == "c-a"
    assert answer["sha256"] == tiny.get_candidate("c-a").onnx_sha256
    assert answer["predictions"][0] == answer["predictions"][1] in ("dry", "rain")
    assert np.allclose(np.sum(answer["probabilities"], axis=1), 1.0, atol=1e-5)
    described = runtime.status()["model"]
    assert (described["input"], described["output"]) == ("features", "probabilities")
    assert described["features"] == list(FEATURES) and described["classes"] == ["dry", "rain"]


def test_swaps_on_promote_and_rollback(tiny: Store) -> None:
    events: list[str] = []
    runtime = _runtime(tiny, on_event=lambda e: events.append(f"{e.kind}:{e.candidate_id}"))
    assert runtime.check_now() is False  # nothing moved
    promote(tiny, "c-b")
    assert runtime.check_now() is True
    assert runtime.predict({"rows": [ROW]})["candidate_id"] == "c-b"
    rollback(tiny)
    assert runtime.check_now() is True
    assert runtime.model.candidate_id == "c-a"
    assert events == ["loaded:c-a", "swapped:c-b", "swapped:c-a"]
    assert runtime.status()["swaps"] == 2


def test_watcher_thread_follows_the_channel(tiny: Store) -> None:
    with ChannelRuntime(tiny.home.channels_dir, poll_s=0.002) as runtime:
        promote(tiny, "c-c")
        deadline = time.monotonic() + 5
        while runtime.model.candidate_id != "c-c" and time.monotonic() < deadline:
            time.sleep(0.005)
        assert runtime.model.candidate_id == "c-c"
        assert runtime.status()["watching"] is True
    assert runtime.status()["watching"] is False


def test_in_flight_request_finishes_on_the_model_it_started_on(tiny: Store) -> None:
    runtime = _runtime(tiny)
    started, release = threading.Event(), threading.Event()
    old = runtime.model
    real_run = old.session.run

    class SlowSession:  # stands in for a long inference on the old model
        def run(self, *args: object) -> object:
            started.set()
            release.wait(5)
            return real_run(*args)

    object.__setattr__(old, "session", SlowSession())
    answers: list[dict] = []
    worker = threading.Thread(target=lambda: answers.append(runtime.predict({"rows": [ROW]})))
    worker.start()
    assert started.wait(5)
    promote(tiny, "c-b")
    assert runtime.check_now() is True  # swapped while the request is mid-inference
    assert runtime.predict({"rows": [ROW]})["candidate_id"] == "c-b"
    release.set()
    worker.join(5)
    assert answers[0]["candidate_id"] == "c-a"


@pytest.mark.parametrize("damage", ["tampered", "truncated", "not-onnx", "manifest-sha"])
def test_bad_new_model_is_refused_and_old_keeps_serving(tiny: Store, damage: str) -> None:
    events = []
    runtime = _runtime(tiny, on_event=events.append)
    promote(tiny, "c-b")
    version = _version(tiny)
    model = version / "model.onnx"
    if damage == "tampered":
        data = bytearray(model.read_bytes())
        data[-10] ^= 0xFF
        model.write_bytes(bytes(data))
    elif damage == "truncated":
        model.write_bytes(model.read_bytes()[:100])
    elif damage == "not-onnx":
        from selection.artifacts.content import sha256_bytes

        junk = b"definitely not a model"
        model.write_bytes(junk)
        manifest = json.loads((version / "manifest.json").read_text())
        manifest["sha256"] = sha256_bytes(junk)  # hashes match, bytes are not a model
        (version / "manifest.json").write_text(json.dumps(manifest))
    else:
        manifest = json.loads((version / "manifest.json").read_text())
        manifest["sha256"] = "0" * 64
        (version / "manifest.json").write_text(json.dumps(manifest))
    assert runtime.check_now() is False
    assert runtime.predict({"rows": [ROW]})["candidate_id"] == "c-a"
    assert events[-1].kind == "refused"
    expected = "must be a model ONNX Runtime can load" if damage == "not-onnx" else "must hash to"
    assert expected in events[-1].detail
    assert runtime.check_now() is False and runtime.status()["refused"] == 1  # not retried
    # `shadow doctor --repair` rewrites the files from the store: now it is taken.
    from selection import sync_channel

    time.sleep(0.01)  # a distinct mtime on coarse-grained filesystems
    sync_channel(tiny, "production")
    assert runtime.check_now() is True
    assert runtime.model.candidate_id == "c-b"


def test_start_refuses_a_tampered_model_and_a_missing_channel(tiny: Store) -> None:
    model = _version(tiny) / "model.onnx"
    model.write_bytes(model.read_bytes()[:-1])
    with pytest.raises(ModelLoadError, match=r"tampered with or truncated.*doctor --repair"):
        ChannelRuntime(tiny.home.channels_dir).start()
    with pytest.raises(NoModelError, match="channel 'canary' must exist"):
        ChannelRuntime(tiny.home.channels_dir, "canary").start()
    with pytest.raises(NoModelError, match="call start"):
        ChannelRuntime(tiny.home.channels_dir).predict({"rows": [ROW]})


def test_load_version_reports_load_time_and_io(tiny: Store) -> None:
    model = load_version(_version(tiny), channel="production")
    assert model.load_ms > 0 and model.n_features == len(FEATURES)
    assert model.version == _version(tiny).name


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([[1.0]], 'must be a JSON object with a "rows" list'),
        ({"row": []}, 'must be a JSON object with a "rows" list'),
        ({"rows": []}, '"rows" must be a non-empty list'),
        ({"rows": [[1.0, 2.0]]}, "every row must have 8 values .* row 0 has 2"),
        ({"rows": [ROW, "x"]}, "row 1 must be a list of numbers or an object"),
        ({"rows": [ROW[:-1] + ["7"]]}, "every value must be a finite number; row 0, min_t is '7'"),
        ({"rows": [ROW[:-1] + [True]]}, "finite number; row 0, min_t is True"),
        ({"rows": [ROW[:-1] + [float("nan")]]}, "finite number; row 0, min_t is nan"),
        ({"rows": [{"temp": 1.0, "bogus": 2}]}, r"missing \['dew'.*unknown \['bogus'\]"),
        ({"rows": [ROW] * 3}, "at most 2 rows per request; got 3"),
    ],
)
def test_bad_rows_are_refused_with_the_rule_and_the_fix(payload: object, message: str) -> None:
    with pytest.raises(BadInputError, match=message):
        parse_rows(payload, n_features=8, features=FEATURES, max_rows=2)


def test_named_rows_need_feature_names() -> None:
    with pytest.raises(BadInputError, match="lists no feature names"):
        parse_rows({"rows": [{"a": 1.0}]}, n_features=1, features=None)
    assert parse_rows({"rows": [[1, 2.5]]}, n_features=2, features=None).dtype == np.float32
