"""Statistics for every accuracy and every A-vs-B claim: Wilson intervals and exact paired tests.

    >>> from ace_interp.evaluation.stats import wilson_interval, accuracy_cell, paired_test
    >>> wilson_interval(8, 10)                       # (0.490..., 0.943...)
    >>> accuracy_cell([1, 1, 0, 1])                  # '75.0% [30.1, 95.4] n=4'
    >>> paired_test([1, 1, 0, 1], [0, 1, 0, 0])      # PairedTest(n=4, only_a=2, only_b=0, ..., p=0.5)

An accuracy over n cases is a binomial proportion; its 95% interval is Wilson's score interval
(Wilson 1927; Brown, Cai & DasGupta 2001 recommend it over the Wald interval for small n and extreme p).
Two methods evaluated on the same cases are compared by the exact McNemar test: only the discordant cases
(right under one method and wrong under the other) carry information, and under the null each is equally
likely to favour either side, so the two-sided p-value is the exact binomial tail with p = 1/2.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Z_95 = 1.959963984540054  # the standard normal's 97.5% quantile


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for `successes` out of `n` (95% by default); (0, 1) when n = 0.

    centre = (p̂ + z²/2n) / (1 + z²/n), half-width = z·sqrt(p̂(1-p̂)/n + z²/4n²) / (1 + z²/n).
    """
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"wilson_interval needs 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def _as_binary(values: Sequence) -> list[int]:
    out = []
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            raise ValueError("accuracy values must be 0/1 (or booleans), got a missing value")
        out.append(1 if float(v) > 0 else 0)
    return out


def accuracy_cell(values: Sequence, digits: int = 1) -> str:
    """'mean% [low, high] n=N' for 0/1 outcomes (a value > 0 counts as right), with the Wilson 95% interval."""
    hits = _as_binary(values)
    return proportion_cell(sum(hits), len(hits), digits)


def proportion_cell(successes: int, n: int, digits: int = 1) -> str:
    """'p% [low, high] n=N' for `successes` of `n` with the Wilson 95% interval ('– n=0' when n = 0)."""
    if n == 0:
        return "– n=0"
    low, high = wilson_interval(successes, n)
    return f"{100 * successes / n:.{digits}f}% [{100 * low:.{digits}f}, {100 * high:.{digits}f}] n={n}"


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact binomial p-value of `wins` against `losses` under p = 1/2 (ties dropped).

    This is the exact McNemar test when wins/losses are the two discordant counts of paired 0/1 outcomes.
    """
    if wins < 0 or losses < 0:
        raise ValueError(f"sign_test needs non-negative counts, got {wins} and {losses}")
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(wins, losses) + 1)) / 2**n
    return min(1.0, 2 * tail)


@dataclass(frozen=True)
class PairedTest:
    """A against B on the same n cases: discordant counts, the mean difference with a 95% interval, and the
    exact McNemar p-value."""

    n: int
    only_a: int
    only_b: int
    difference: float           # mean(A) - mean(B)
    difference_low: float       # 95% interval of the difference (Newcombe's method 10 for paired data)
    difference_high: float
    p_value: float

    def __str__(self) -> str:
        return (f"{100 * self.difference:+.1f} pts [{100 * self.difference_low:+.1f}, {100 * self.difference_high:+.1f}] "
                f"({self.only_a} vs {self.only_b} discordant of n={self.n}, exact McNemar p={self.p_value:.2g})")


def paired_test(a: Sequence, b: Sequence) -> PairedTest:
    """Compare 0/1 outcomes `a` and `b` on the same cases (same order, same length).

    The interval of the difference is Newcombe's (1998) method 10, built from the two Wilson intervals and a
    correction for the correlation of the pairs; the p-value is the exact McNemar test.
    """
    a_bin, b_bin = _as_binary(a), _as_binary(b)
    if len(a_bin) != len(b_bin):
        raise ValueError(f"paired_test needs outcomes on the same cases, got {len(a_bin)} and {len(b_bin)}")
    n = len(a_bin)
    if n == 0:
        return PairedTest(0, 0, 0, 0.0, -1.0, 1.0, 1.0)
    both = sum(x and y for x, y in zip(a_bin, b_bin))
    only_a = sum(x and not y for x, y in zip(a_bin, b_bin))
    only_b = sum(y and not x for x, y in zip(a_bin, b_bin))
    neither = n - both - only_a - only_b
    p1, p2 = (both + only_a) / n, (both + only_b) / n
    l1, u1 = wilson_interval(both + only_a, n)
    l2, u2 = wilson_interval(both + only_b, n)
    # Newcombe's phi: the correlation of the two margins, set to 0 when a margin is empty (as he specifies).
    margins = (both + only_a) * (neither + only_b) * (both + only_b) * (neither + only_a)
    phi = 0.0
    if margins > 0:
        phi = (both * neither - only_a * only_b) / math.sqrt(margins)
        if both * neither - only_a * only_b > 0:
            phi = (max(0.0, both * neither - only_a * only_b - n / 2)) / math.sqrt(margins)
    d = p1 - p2
    low = d - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    high = d + math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return PairedTest(n, only_a, only_b, d, max(-1.0, low), min(1.0, high), sign_test(only_a, only_b))
