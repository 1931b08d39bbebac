"""Calibration on published latencies: the data and its provenance, the held-out chip, the fit."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import onnx  # noqa: E402  (after the helpers: same order as the sibling tests)
import pytest

from shadow.devices.catalog import builtin_profile
from shadow.devices.edge import calibrate
from shadow.devices.edge.cost_model import estimate
from shadow.devices.edge.graph import analyze
from shadow.devices.edge.published import HELD_OUT_CHIPS, fit_rows, load_published, select
from shadow.errors import ConfigError
from tests.shadow.devices.test_edge_cost_model import conv_model
from tests.shadow.devices.test_edge_device import separable_model

FIT_CHIPS = {"SM8450": "snapdragon-8-gen-1-htp", "SM8650": "snapdragon-8-gen-3-htp",
             "SM8750": "snapdragon-8-elite-htp"}


def test_published_data_covers_15_architectures_in_2_precisions_on_3_chips_with_sources():
    rows = load_published()
    for chip in FIT_CHIPS:
        chosen = select(rows, chip)
        by_numerics = {n: {r.model for r in chosen if r.numerics == n} for n in ("fp16", "a8w8")}
        assert len(by_numerics["fp16"]) >= 15 and len(by_numerics["a8w8"]) >= 15, chip
    assert all(r.inference_ms > 0 and "qai-hub-models 0.65.0" in r.source and "perf.yaml" in r.source
               and "job " in r.source for r in rows)
    held = select(rows, "SM8550")
    assert held and {r.chip for r in held} == {"QCS8550"}  # the same silicon, judged only


def test_a_fit_on_the_held_out_chip_is_refused():
    rows = load_published()
    fit_rows(select(rows, "SM8650"))
    with pytest.raises(ConfigError, match=r"QCS8550 are held out of every fit"):
        fit_rows(select(rows, "SM8550"))
    assert {"SM8550", "QCS8550"} == HELD_OUT_CHIPS


def _graphs():
    return [analyze(conv_model()), analyze(onnx.load_model_from_string(separable_model(width=64)))]


@pytest.mark.parametrize("numerics", ["a8w8", "a16w8", "fp16"])
def test_vectorised_estimate_equals_the_cost_model(numerics):
    profile = builtin_profile("snapdragon-8-gen-2-htp")
    points = [calibrate.Point(g, numerics, 1.0, str(i)) for i, g in enumerate(_graphs())]
    expected = [estimate(p.stats, profile, numerics).total_ms for p in points]
    assert calibrate.predict_ms(profile, points) == pytest.approx(expected, rel=1e-9)


def test_fit_recovers_the_terms_that_made_the_latencies():
    start = builtin_profile("snapdragon-8-gen-2-htp")
    truth = calibrate.with_terms(start, {"dispatch.per_op_s": 9e-6, "dispatch.per_inference_s": 40e-6,
                                         "compute.int8_macs_per_s": 2e12})
    graphs = _graphs()
    points = [calibrate.Point(g, "a8w8", estimate(g, truth, "a8w8").total_ms, str(i)) for i, g in enumerate(graphs)]
    fitted = calibrate.fit(start, points, terms=("dispatch.per_op_s", "dispatch.per_inference_s"))
    assert set(fitted) == {"dispatch.per_op_s", "dispatch.per_inference_s"}
    assert calibrate.predict_ms(calibrate.with_terms(start, fitted), points) == pytest.approx(
        [p.measured_ms for p in points], rel=0.05)


def test_agreement_metrics():
    measured = [1.0, 2.0, 3.0, 4.0]
    perfect = calibrate.agreement(measured, measured)
    assert perfect == {"n": 4, "spearman": pytest.approx(1.0), "pairwise_order": 1.0, "mape": 0.0,
                       "within_25pct": 1.0}
    reversed_ = calibrate.agreement(measured[::-1], measured)
    assert reversed_["spearman"] == pytest.approx(-1.0) and reversed_["pairwise_order"] == 0.0
    close = calibrate.agreement([1.2, 2.0, 3.0, 6.0], measured)
    assert close["within_25pct"] == 0.75 and close["mape"] == pytest.approx((0.2 + 0.5) / 4)


def test_shipped_profiles_are_fitted_off_the_held_out_chip_and_sm8550_is_derived_from_its_neighbours():
    fitted = {chip: builtin_profile(name) for chip, name in FIT_CHIPS.items()}
    for chip, profile in fitted.items():
        assert profile.soc == chip and profile.qnn is not None
        for term in calibrate.FREE_TERMS:
            assert profile.sources[term].startswith("fitted:") and "QCS8550" not in profile.sources[term]
    sm8550 = builtin_profile("snapdragon-8-gen-2-htp")
    for term in calibrate.FREE_TERMS:
        low, high = (calibrate.term_value(fitted[chip], term) for chip in ("SM8450", "SM8650"))
        neighbours = math.sqrt(low * high)
        assert calibrate.term_value(sm8550, term) == pytest.approx(neighbours, rel=2e-3), term
        assert sm8550.sources[term].startswith("derived:")


def test_with_terms_changes_only_the_named_terms():
    profile = builtin_profile("snapdragon-8-gen-2-htp")
    changed = calibrate.with_terms(profile, {"efficiency.gemm": 0.3, "memory.dram_bytes_per_s": 1e9})
    assert changed.efficiency_of("gemm") == 0.3 and changed.dram_bytes_per_s == 1e9
    assert dataclasses.replace(changed, efficiency=profile.efficiency, dram_bytes_per_s=profile.dram_bytes_per_s) \
        == profile
    assert np.isfinite(calibrate.term_value(profile, "dispatch.per_op_s"))
