"""Triggers fire exactly at their boundaries, in a fixed order, with JSON-able evidence."""

import json
import math
import time
from dataclasses import FrozenInstanceError, replace
from fractions import Fraction

import pytest

from shadow.loop import triggers as triggers_module
from shadow.loop.triggers import LoopState, TriggerFiring, binomial_cdf, config_hash, evaluate
from shadow.sweep.watch_config import TRIGGER_KEYS, SignificantDrop, WatchTriggers


def state(**overrides) -> LoopState:
    """A quiet state: one sweep ago, nothing new, champion as good as at promotion."""
    base = {
        "rows_now": 1_000, "rows_at_last_sweep": 1_000, "now_s": 5_000.0, "last_sweep_at_s": 5_000.0,
        "live_correct": 90, "live_total": 100, "promotion_accuracy": 0.9,
        "config_hash": "a" * 64, "config_hash_at_last_sweep": "a" * 64,
    }
    base.update(overrides)
    return LoopState(**base)


ALL = WatchTriggers(new_rows=100, schedule_s=3600.0, min_accuracy=0.8,
                    significant_drop=SignificantDrop(alpha=0.05, min_rows=50),
                    drift=True, config_changed=True)


def names(firings: tuple[TriggerFiring, ...]) -> list[str]:
    return [f.trigger for f in firings]


def exact_cdf(k: int, n: int, p: Fraction) -> Fraction:
    return sum((math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1)), Fraction(0))


def test_quiet_state_fires_nothing():
    assert evaluate(state(), ALL) == ()


@pytest.mark.parametrize(
    ("overrides", "fires"),
    [
        ({"rows_now": 1_099}, False),  # 99 new rows, threshold 100
        ({"rows_now": 1_100}, True),   # equal to the threshold
        ({"rows_now": 1_101}, True),
        ({"now_s": 5_000.0 + 3599.5}, False),
        ({"now_s": 5_000.0 + 3600.0}, True),
        ({"live_correct": 80}, False),  # 0.80 is not below 0.8
        ({"live_correct": 79}, True),
    ],
)
def test_threshold_boundaries(overrides, fires):
    only = {"rows_now": "new_rows", "now_s": "schedule_s", "live_correct": "min_accuracy"}
    trigger = only[next(iter(overrides))]
    settings = WatchTriggers(**{trigger: getattr(ALL, trigger)})
    assert names(evaluate(state(**overrides), settings)) == ([trigger] if fires else [])


def test_first_sweep_counts_every_row_and_is_due_on_schedule():
    first = state(rows_now=100, rows_at_last_sweep=None, last_sweep_at_s=None,
                  config_hash_at_last_sweep=None)
    fired = evaluate(first, ALL)
    # config_changed has nothing to compare with before the first sweep.
    assert names(fired) == ["new_rows", "schedule_s"]
    assert fired[0].evidence["new_rows"] == 100
    assert fired[1].evidence["elapsed_s"] is None
    assert evaluate(replace(first, rows_now=99), WatchTriggers(new_rows=100)) == ()


def test_min_accuracy_needs_live_rows():
    assert evaluate(state(live_correct=0, live_total=0), WatchTriggers(min_accuracy=0.99)) == ()


def test_significant_drop_boundaries():
    drop = WatchTriggers(significant_drop=SignificantDrop(alpha=0.05, min_rows=100))
    # Against 0.9 at promotion, on 100 rows: the largest k with P(X <= k) < 0.05.
    p = Fraction(9, 10)
    k_fire = max(k for k in range(101) if exact_cdf(k, 100, p) < Fraction(1, 20))
    assert names(evaluate(state(live_correct=k_fire), drop)) == ["significant_drop"]
    assert evaluate(state(live_correct=k_fire + 1), drop) == ()
    # min_rows: 99 rows never fire however bad; 100 may.
    assert evaluate(state(live_correct=0, live_total=99), drop) == ()
    assert names(evaluate(state(live_correct=0, live_total=100), drop)) == ["significant_drop"]
    # No champion, no promotion accuracy: nothing to test against.
    assert evaluate(state(live_correct=0, promotion_accuracy=None), drop) == ()
    fired = evaluate(state(live_correct=k_fire), drop)[0]
    assert fired.evidence["p_value"] == pytest.approx(float(exact_cdf(k_fire, 100, p)), rel=1e-9)
    assert fired.evidence["p_value"] < 0.05 <= float(exact_cdf(k_fire + 1, 100, p))


def test_alpha_boundary_is_strict():
    p_value = binomial_cdf(80, 100, 0.9)
    at = WatchTriggers(significant_drop=SignificantDrop(alpha=p_value, min_rows=1))
    assert evaluate(state(live_correct=80), at) == ()  # p == alpha does not fire
    above = WatchTriggers(significant_drop=SignificantDrop(alpha=math.nextafter(p_value, 1), min_rows=1))
    assert names(evaluate(state(live_correct=80), above)) == ["significant_drop"]


def test_drift_and_config_changed():
    assert evaluate(state(drift_fired=True), WatchTriggers(config_changed=True)) == ()
    fired = evaluate(state(drift_fired=True, drift_detail={"detector": "adwin", "width": 412}),
                     WatchTriggers(drift=True))
    assert names(fired) == ["drift"]
    assert fired[0].evidence == {"drift_fired": True, "detector": "adwin", "width": 412}
    changed = evaluate(state(config_hash="b" * 64), WatchTriggers(config_changed=True))
    assert names(changed) == ["config_changed"]
    assert changed[0].evidence == {"config_hash": "b" * 64, "config_hash_at_last_sweep": "a" * 64}
    assert evaluate(state(config_hash="b" * 64), WatchTriggers(drift=True)) == ()


def test_every_trigger_at_once_fires_in_the_fixed_order_with_json_evidence():
    everything = state(rows_now=5_000, now_s=1e6, live_correct=10, drift_fired=True,
                       drift_detail={"detector": "adwin"}, config_hash="c" * 64)
    fired = evaluate(everything, ALL)
    assert names(fired) == list(TRIGGER_KEYS)
    assert [name for name, _ in triggers_module._CHECKS] == list(TRIGGER_KEYS)
    for firing in fired:
        assert firing.reason and "\n" not in firing.reason
        assert json.loads(json.dumps(firing.as_dict(), allow_nan=False)) == firing.as_dict()
    drop = fired[3]
    assert drop.evidence["live_correct"] == 10 and drop.evidence["promotion_accuracy"] == 0.9
    assert "significantly below 0.9000 at promotion" in drop.reason
    with pytest.raises(FrozenInstanceError):
        fired[0].trigger = "x"  # type: ignore[misc]


def test_binomial_reference_values():
    # The example from the design note: 60/100 live against 0.75 at promotion.
    p = binomial_cdf(60, 100, 0.75)
    reference = exact_cdf(60, 100, Fraction(3, 4))
    assert p == pytest.approx(float(reference), rel=1e-12)
    assert p == pytest.approx(0.000686592, rel=1e-6)
    for k, n, p0 in [(0, 1, 0.5), (3, 10, 0.5), (9, 10, 0.9), (74, 100, 0.75), (95, 100, 0.75),
                     (0, 50, 0.99), (49, 50, 0.99), (5, 300, 0.01), (250, 300, 0.8)]:
        assert binomial_cdf(k, n, p0) == pytest.approx(
            float(exact_cdf(k, n, Fraction(p0))), rel=1e-9, abs=1e-300), (k, n, p0)


def test_binomial_edges():
    assert binomial_cdf(-1, 10, 0.5) == 0.0
    assert binomial_cdf(10, 10, 0.5) == 1.0
    assert binomial_cdf(3, 10, 0.0) == 1.0
    assert binomial_cdf(9, 10, 1.0) == 0.0  # an error is impossible if accuracy was exactly 1
    for bad in (-0.1, 1.1, float("nan")):
        with pytest.raises(ValueError):
            binomial_cdf(3, 10, bad)


def test_binomial_at_a_million_rows_is_fast_and_finite():
    n = 10**6
    start = time.perf_counter()
    below = binomial_cdf(749_000, n, 0.75)   # about 2.31 sd below the mean
    above = binomial_cdf(750_500, n, 0.75)   # about 1.15 sd above
    tiny = binomial_cdf(700_000, n, 0.75)    # about 115 sd below: underflows to 0, no error
    assert time.perf_counter() - start < 1.0
    # Normal approximation with continuity correction, good to ~1% at this n.
    sd = math.sqrt(n * 0.75 * 0.25)
    normal = [0.5 * math.erfc(-(k + 0.5 - 0.75 * n) / (sd * math.sqrt(2))) for k in (749_000, 750_500)]
    assert below == pytest.approx(normal[0], rel=0.02)
    assert above == pytest.approx(normal[1], rel=0.02)
    assert 0.0 <= tiny < 1e-300
    assert binomial_cdf(n - 1, n, 0.999_999) == pytest.approx(1 - 0.999_999**n, rel=1e-6)


def test_state_refuses_impossible_counts():
    with pytest.raises(ValueError, match="live_correct <= live_total"):
        state(live_correct=101)
    with pytest.raises(ValueError, match="promotion_accuracy"):
        state(promotion_accuracy=1.2)
    with pytest.raises(ValueError, match="finite"):
        state(now_s=float("nan"))


def test_config_hash_ignores_watch_but_sees_config_and_code():
    raw = {"sweep": {"dataset": "toy"}, "model": {"family": "mlp", "params": {"width": [4, 8]}}}
    base = config_hash(raw, "abc123")
    assert len(base) == 64
    assert config_hash({**raw, "watch": {"poll_s": 1.0}}, "abc123") == base
    assert config_hash(dict(reversed(list(raw.items()))), "abc123") == base
    assert config_hash(raw, "abc124") != base
    assert config_hash({**raw, "holdout": {"rows": 10}}, "abc123") != base
