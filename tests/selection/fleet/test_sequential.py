"""The canary test under repeated looks: seeded simulations of the fleet server's ticks.

The server re-judges every 0.2 s; a z-test re-run on every tick rolled back
identical models about 7 % of the time at alpha 0.01 (60 looks). Judged only
at planned looks with alpha split over them, it stays at or under alpha.
"""

from __future__ import annotations

import numpy as np

from selection.fleet.evidence import Arm, Looks, judge, planned_looks


def _rollout(rng: np.random.Generator, canary_p: float, control_p: float, *, ticks: int = 60,
             per_tick: tuple[int, int] = (40, 360), alpha: float = 0.01) -> int | None:
    """Labelled canary requests when it was rolled back (None: never), ticking as the server."""
    right_c = np.cumsum(rng.binomial(per_tick[0], canary_p, ticks))
    right_k = np.cumsum(rng.binomial(per_tick[1], control_p, ticks))
    looks = Looks()
    for tick in range(ticks):
        c, k = per_tick[0] * (tick + 1), per_tick[1] * (tick + 1)
        cc, kc = int(right_c[tick]), int(right_k[tick])
        verdict = judge(Arm(c, 0, c, cc), Arm(k, 0, k, kc), alpha=alpha, min_labelled=200,
                        min_predictions=200, looks=looks)
        looks = verdict.looks
        if verdict.action == "rollback":
            return c
    return None


def test_identical_models_are_rolled_back_at_most_alpha_of_the_time() -> None:
    rng = np.random.default_rng(1)
    trials = 1000
    false = sum(_rollout(rng, 0.8, 0.8) is not None for _ in range(trials)) / trials
    assert false <= 0.01, false  # a re-run z-test on every tick: 0.072


def test_a_clearly_worse_canary_is_still_rolled_back_within_1600_labelled_requests() -> None:
    rng = np.random.default_rng(2)
    at = [_rollout(rng, 0.7, 0.8) for _ in range(300)]  # 10 points worse
    assert all(n is not None and n <= 1600 for n in at), at  # every one, by the 4th look
    assert sum(n is not None and n <= 800 for n in at) >= 0.97 * len(at)  # 99.9 % in 1000 runs
    assert sum(n == 200 for n in at) >= 0.4 * len(at)  # 57 % at the first look


def test_looks_are_planned_and_taken_once() -> None:
    assert [planned_looks(n, 200, 5) for n in (199, 200, 399, 400, 800, 10**6)] == [0, 1, 1, 2, 3, 5]
    first = judge(Arm(250, 0, 250, 200), Arm(250, 0, 250, 200), alpha=0.01, min_labelled=200,
                  min_predictions=200)
    assert first.looked and first.looks == Looks(accuracy=1, errors=1, not_worse=True)
    again = judge(Arm(300, 0, 300, 100), Arm(300, 0, 300, 250), alpha=0.01, min_labelled=200,
                  min_predictions=200, looks=first.looks)
    # Far worse now, but no planned look is due until 400 each: the verdict stands, no new look.
    assert not again.looked and again.action == "widen"
    due = judge(Arm(400, 0, 400, 150), Arm(400, 0, 400, 330), alpha=0.01, min_labelled=200,
                min_predictions=200, looks=first.looks)
    assert due.action == "rollback" and due.looks.accuracy == 2
