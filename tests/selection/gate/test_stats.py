import numpy as np
import pytest

from selection.errors import ConfigError
from selection.gate.stats import binomial_half_p, mcnemar_exact


def test_exact_binomial_tails_match_hand_computed_values():
    # 8 or more heads in 10 fair flips: (45 + 10 + 1) / 1024.
    assert binomial_half_p(8, 10, "greater") == pytest.approx(56 / 1024)
    assert binomial_half_p(8, 10, "two-sided") == pytest.approx(112 / 1024)
    assert binomial_half_p(5, 10, "two-sided") == 1.0
    assert binomial_half_p(0, 3, "greater") == 1.0


def test_mcnemar_counts_only_discordant_rows():
    challenger = np.array([1, 1, 1, 1, 1, 1, 1, 0, 1, 1], dtype=bool)
    champion = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1], dtype=bool)
    result = mcnemar_exact(challenger, champion)
    assert (result.b_challenger_only, result.c_champion_only, result.n_discordant) == (6, 1, 7)
    assert result.p_value == pytest.approx((7 + 1) / 128)  # P(X >= 6), X ~ Bin(7, 1/2)
    assert mcnemar_exact(champion, champion).p_value == 1.0
    with pytest.raises(ConfigError, match="one outcome per holdout row"):
        mcnemar_exact(challenger, champion[:5])
