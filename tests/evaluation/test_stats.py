"""Wilson intervals and exact paired tests against hand-computed values."""
import math

import pytest

from ace_interp.evaluation.stats import accuracy_cell, paired_test, sign_test, wilson_interval


def test_wilson_interval_matches_hand_computed_values():
    # 8 of 10: p = 0.8, z = 1.96: centre = (0.8 + 0.19207)/1.38415, half = 1.96*sqrt(0.016 + 0.0009604)/1.38415
    low, high = wilson_interval(8, 10)
    z = 1.959963984540054
    centre = (0.8 + z * z / 20) / (1 + z * z / 10)
    half = z * math.sqrt(0.8 * 0.2 / 10 + z * z / 400) / (1 + z * z / 10)
    assert math.isclose(low, centre - half) and math.isclose(high, centre + half)
    assert round(low, 4) == 0.4902 and round(high, 4) == 0.9433  # published table value (Newcombe 1998, 8/10)
    assert wilson_interval(0, 10)[0] == 0.0 and round(wilson_interval(0, 10)[1], 4) == 0.2775
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(11, 10)


def test_accuracy_cell_names_n_and_interval():
    assert accuracy_cell([1, 1, 0, 1]) == "75.0% [30.1, 95.4] n=4"
    assert accuracy_cell([True] * 10) == "100.0% [72.2, 100.0] n=10"
    assert accuracy_cell([]) == "– n=0"


def test_sign_test_is_the_exact_two_sided_binomial():
    assert sign_test(5, 0) == 2 / 2**5
    assert sign_test(3, 3) == 1.0 and sign_test(0, 0) == 1.0
    # brute force over every outcome as extreme as (7 wins, 2 losses) under p = 1/2
    n = 9
    extreme = sum(math.comb(n, k) for k in range(n + 1) if min(k, n - k) <= 2) / 2**n
    assert math.isclose(sign_test(7, 2), extreme) and math.isclose(sign_test(2, 7), extreme)


def test_paired_test_counts_discordant_pairs_and_newcombe_interval():
    # 36 both, 12 only A, 2 only B, 0 neither (n = 50). Newcombe's method 10 by hand: the Wilson limits of
    # 48/50 and 38/50, phi from the 2x2 table (AD - BC < 0, so no continuity correction), then
    # L = d - sqrt(dl2^2 - 2 phi dl2 du3 + du3^2), U = d + sqrt(du2^2 - 2 phi du2 dl3 + dl3^2).
    a = [1] * 36 + [1] * 12 + [0] * 2
    b = [1] * 36 + [0] * 12 + [1] * 2
    result = paired_test(a, b)
    assert (result.n, result.only_a, result.only_b) == (50, 12, 2)
    assert math.isclose(result.difference, 0.2)
    l1, u1 = wilson_interval(48, 50)
    l2, u2 = wilson_interval(38, 50)
    phi = (36 * 0 - 12 * 2) / math.sqrt(48 * 2 * 38 * 12)
    low = 0.2 - math.sqrt((0.96 - l1) ** 2 - 2 * phi * (0.96 - l1) * (u2 - 0.76) + (u2 - 0.76) ** 2)
    high = 0.2 + math.sqrt((u1 - 0.96) ** 2 - 2 * phi * (u1 - 0.96) * (0.76 - l2) + (0.76 - l2) ** 2)
    assert math.isclose(result.difference_low, low) and math.isclose(result.difference_high, high)
    assert round(result.difference_low, 4) == 0.0569  # the same arithmetic written out: 0.2 - sqrt(0.02046)
    assert math.isclose(result.p_value, sign_test(12, 2))
    # no discordant pair: no difference, p = 1
    same = paired_test([1, 0, 1], [1, 0, 1])
    assert (same.only_a, same.only_b, same.difference, same.p_value) == (0, 0, 0.0, 1.0)
    with pytest.raises(ValueError, match="same cases"):
        paired_test([1, 0], [1])
