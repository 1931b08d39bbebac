"""The HTP emulator's check rows: batched only where that changes nothing, one per call otherwise."""

from __future__ import annotations

import numpy as np
import pytest

from shadow.devices import get_device
from shadow.devices.edge import qnn
from shadow.devices.edge.quantize import static_batch, to_numerics
from tests.shadow.devices.test_edge_device import separable_model, separable_rows

pytestmark = pytest.mark.skipif(not qnn.emulator_status()[0], reason="the QNN HTP emulator is not available here")

X, Y = separable_rows(200, seed=2)
CALIBRATION, _ = separable_rows(300, seed=1)
QNN = get_device("snapdragon-8-gen-2-htp").profile.qnn
assert QNN is not None


def _quantized(with_erf: bool = False) -> bytes:
    return to_numerics(separable_model(with_erf=with_erf), "a8w8", CALIBRATION)


@pytest.mark.parametrize("with_erf", [False, True])
def test_batched_check_gives_exactly_what_one_row_per_call_gives(with_erf):
    """Also with a node on the CPU (Erf): the placement is the same at batch 1 and batch 64."""
    model = _quantized(with_erf)
    compiled = qnn.compile_model(static_batch(model), QNN, "a8w8")
    top1, mode = qnn.check_top1(compiled, static_batch(model, qnn.CHECK_BATCH), QNN, "a8w8", X)
    assert mode == "batched"
    # 200 rows: three full batches and a padded one.
    assert np.array_equal(top1, compiled.predict(X)) and top1.dtype == np.int64 and top1.shape == (200,)


def test_a_batched_model_that_disagrees_is_not_used():
    """Same placement, other weights: the cross-check sees different outputs and every row runs one per call."""
    model = _quantized()
    other = to_numerics(separable_model(width=4), "a8w8", CALIBRATION)
    compiled = qnn.compile_model(static_batch(model), QNN, "a8w8")
    top1, mode = qnn.check_top1(compiled, static_batch(other, qnn.CHECK_BATCH), QNN, "a8w8", -X)
    assert mode == "per-row" and np.array_equal(top1, compiled.predict(-X))


def test_a_batched_model_placed_differently_is_not_used():
    compiled = qnn.compile_model(static_batch(_quantized()), QNN, "a8w8")
    erf = static_batch(_quantized(with_erf=True), qnn.CHECK_BATCH)
    top1, mode = qnn.check_top1(compiled, erf, QNN, "a8w8", X)
    assert mode == "per-row" and np.array_equal(top1, compiled.predict(X))


@pytest.mark.parametrize("broken", ["runs-wrong-batch", "not-onnx"])
def test_a_batched_copy_that_fails_means_one_row_per_call(broken):
    """A copy that compiles and places alike but the emulator refuses to run (batch 1 fed 64
    rows), or one that does not compile: never a failed device run, every row one per call."""
    model = _quantized()
    compiled = qnn.compile_model(static_batch(model), QNN, "a8w8")
    copy = static_batch(model) if broken == "runs-wrong-batch" else b"not onnx"
    top1, mode = qnn.check_top1(compiled, copy, QNN, "a8w8", X)
    assert mode == "per-row" and np.array_equal(top1, compiled.predict(X))


def test_few_rows_run_one_per_call():
    model = _quantized()
    compiled = qnn.compile_model(static_batch(model), QNN, "a8w8")
    top1, mode = qnn.check_top1(compiled, static_batch(model, qnn.CHECK_BATCH), QNN, "a8w8", X[:5])
    assert mode == "per-row" and np.array_equal(top1, compiled.predict(X[:5]))
    # No batched copy at all (what the device passes when it has this few rows): the same.
    top1, mode = qnn.check_top1(compiled, b"", QNN, "a8w8", X[:5])
    assert mode == "per-row" and np.array_equal(top1, compiled.predict(X[:5]))


def test_a_copy_compiled_without_its_context_file_runs_the_same():
    """The batched check copy skips the EPContext file: nothing to ship, the same numbers."""
    model = static_batch(_quantized())
    shipped, checked = qnn.compile_model(model, QNN, "a8w8"), qnn.compile_model(model, QNN, "a8w8", context=False)
    assert shipped.context_bytes and checked.context_bytes == b""
    assert sorted(checked.placement) == sorted(shipped.placement)
    assert np.array_equal(checked.predict(X[:16]), shipped.predict(X[:16]))


def test_a_device_with_few_check_rows_builds_no_batched_copy(monkeypatch):
    from shadow.devices.edge import device

    batches = []

    def recording(model, batch=1):
        batches.append(batch)
        return static_batch(model, batch)

    monkeypatch.setattr(device, "static_batch", recording)
    extra = get_device("snapdragon-8-gen-2-htp").run(separable_model(), X[:6], Y[:6], CALIBRATION).result.extra
    assert extra["check_rows"] == 6 and extra["emulator_check_mode"] == "per-row"
    assert batches == [1]  # the batch-1 model only
    get_device("snapdragon-8-gen-2-htp").run(separable_model(width=4), X, Y, CALIBRATION)
    assert batches == [1, 1, qnn.CHECK_BATCH]


def test_the_device_row_says_how_the_check_rows_ran():
    extra = get_device("snapdragon-8-gen-2-htp").run(separable_model(), X, Y, CALIBRATION).result.extra
    assert extra["emulator_check_mode"] == "batched" and extra["check_rows"] == 200
    assert extra["accuracy_emulator"] > 0.9
