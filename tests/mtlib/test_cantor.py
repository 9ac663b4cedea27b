"""Tests of mtlib.cantor: the fat Cantor set and its distance function (stampacchia chapter)."""

from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mtlib.cantor import (
    MAX_LEVEL,
    distance_to_fat_cantor,
    fat_cantor_breakpoints,
    fat_cantor_cdf,
    fat_cantor_density,
    fat_cantor_intervals,
    fat_cantor_measure,
    interval_length,
    sample_fat_cantor,
    secant_slope,
)


def brute_distance(x: Fraction, n: int) -> Fraction:
    """dist(x, C_n) from the exact list of intervals: the oracle."""
    return min(Fraction(0) if a <= x <= b else min(abs(x - a), abs(x - b))
               for a, b in fat_cantor_intervals(n))


@pytest.mark.parametrize("n", range(11))
def test_construction_matches_the_closed_form_length_and_measure(n):
    intervals = fat_cantor_intervals(n)
    assert len(intervals) == 2**n
    assert all(b - a == interval_length(n) for a, b in intervals)
    assert interval_length(n) == Fraction(1, 2 ** (n + 1)) + Fraction(1, 2 ** (2 * n + 1))
    assert fat_cantor_measure(n) == Fraction(1, 2) + Fraction(1, 2 ** (n + 1))
    assert all(b1 < a2 for (_, b1), (a2, _) in zip(intervals, intervals[1:]))   # disjoint, sorted


def test_exact_small_levels():
    assert [(str(a), str(b)) for a, b in fat_cantor_intervals(2)] == [
        ("0", "5/32"), ("7/32", "3/8"), ("5/8", "25/32"), ("27/32", "1")]
    assert [str(fat_cantor_measure(n)) for n in range(5)] == ["1", "3/4", "5/8", "9/16", "17/32"]
    # the gaps of level k have length 4^-k: 1/4, then two of 1/16
    gaps = [a2 - b1 for (_, b1), (a2, _) in zip(fat_cantor_intervals(2), fat_cantor_intervals(2)[1:])]
    assert gaps == [Fraction(1, 16), Fraction(1, 4), Fraction(1, 16)]


def test_breakpoints_are_gap_ends_and_midpoints():
    assert fat_cantor_breakpoints(0) == []
    assert fat_cantor_breakpoints(2) == [5 / 32, 3 / 16, 7 / 32, 0.375, 0.5, 0.625,
                                         25 / 32, 13 / 16, 27 / 32]
    assert len(fat_cantor_breakpoints(6)) == 3 * (2**6 - 1)


@pytest.mark.parametrize("n", range(7))
def test_distance_equals_the_exact_oracle_on_a_dyadic_grid(n):
    grid = [Fraction(k, 256) for k in range(-64, 321)]
    got = distance_to_fat_cantor(torch.tensor([float(p) for p in grid], dtype=torch.float64), n)
    assert got.tolist() == [float(brute_distance(p, n)) for p in grid]


def test_endpoints_of_every_level_lie_in_deeper_levels():
    ends = torch.tensor([float(e) for ab in fat_cantor_intervals(6) for e in ab], dtype=torch.float64)
    assert (distance_to_fat_cantor(ends, 16) == 0).all()


@pytest.mark.parametrize("n", [0, 2, 4, 6])
def test_levels_bracket_the_limit_within_two_to_the_minus_2n_minus_3(n):
    x = torch.arange(-2**14, 2**16 + 2**14 + 1, dtype=torch.float64) / 2**16   # holds every gap midpoint
    coarse, fine = distance_to_fat_cantor(x, n), distance_to_fat_cantor(x, n + 8)
    assert (fine >= coarse).all()
    assert (fine - coarse).max().item() <= 2.0 ** (-2 * n - 3)
    assert (fine - coarse).max().item() == 2.0 ** (-2 * n - 3)   # attained at level-(n+1) gap midpoints


def test_autograd_derivative_is_sign_on_gaps_and_zero_on_the_set():
    x = torch.tensor([-1.0, 0.1, 0.4, 0.45, 0.5, 0.55, 0.6, 0.9, 2.0], dtype=torch.float64)
    x.requires_grad_(True)
    distance_to_fat_cantor(x, 1).sum().backward()
    assert x.grad.tolist() == [-1.0, 0.0, 1.0, 1.0, 0.0, -1.0, -1.0, 0.0, 1.0]


@settings(max_examples=60, deadline=None)
@given(st.floats(-0.5, 1.5), st.floats(-0.5, 1.5), st.integers(0, 12))
def test_one_lipschitz(a, b, n):
    w = distance_to_fat_cantor(torch.tensor([a, b], dtype=torch.float64), n)
    assert abs(w[0] - w[1]).item() <= abs(a - b) + 1e-15


def test_samples_lie_in_the_set_and_are_reproducible():
    x = sample_fat_cantor(2000, 10, seed=3)
    assert (distance_to_fat_cantor(x, 10) == 0).all()
    assert torch.equal(x, sample_fat_cantor(2000, 10, seed=3))
    assert 900 < int((x < 0.5).sum()) < 1100   # both halves of C_10 have the same measure
    assert (x * 2**41 == (x * 2**41).round()).all()   # dyadic: denominator 2^(2n+1+bits)


def test_secant_slopes_are_one_at_gap_ends_and_small_at_typical_points():
    ends = torch.tensor([0.375, 0.625, 5 / 32], dtype=torch.float64)
    for j in range(5, 12):   # h <= 1/32, half the smallest of these gaps
        assert secant_slope(ends, 2.0**-j, 14).tolist() == [1.0, 1.0, 1.0]
    x = sample_fat_cantor(1000, 14, seed=0)
    means = [secant_slope(x, 2.0**-j, 14).mean().item() for j in (4, 8, 12)]
    assert means[0] > means[1] > means[2] and means[2] < 0.05


def test_bad_arguments():
    with pytest.raises(ValueError, match="`n` must be <= 25"):
        distance_to_fat_cantor(torch.zeros(1, dtype=torch.float64), MAX_LEVEL + 1)
    with pytest.raises(ValueError, match="`n` must be >= 0"):
        fat_cantor_intervals(-1)
    with pytest.raises(TypeError, match="`n` must be an int"):
        fat_cantor_measure(1.0)
    with pytest.raises(TypeError):
        distance_to_fat_cantor(torch.zeros(1, dtype=torch.int64), 2)
    with pytest.raises(ValueError, match="2 n \\+ 1 \\+ bits"):
        sample_fat_cantor(3, 20, bits=20)
    with pytest.raises(ValueError, match="`h` must be > 0"):
        secant_slope(torch.zeros(1, dtype=torch.float64), 0.0, 2)


def brute_cdf(x: Fraction, n: int) -> Fraction:
    """|C_n intersected with [0, x]| from the exact list of intervals: the oracle."""
    return sum((max(Fraction(0), min(b, x) - a) for a, b in fat_cantor_intervals(n)), Fraction(0))


@pytest.mark.parametrize("n", range(7))
def test_cdf_equals_the_exact_oracle_on_a_dyadic_grid(n):
    grid = [Fraction(k, 512) for k in range(-64, 577)]
    got = fat_cantor_cdf(torch.tensor([float(p) for p in grid], dtype=torch.float64), n)
    assert got.tolist() == [float(brute_cdf(p, n)) for p in grid]


@given(st.integers(0, 8), st.integers(0, 2**20), st.integers(1, 2**20))
@settings(max_examples=200, deadline=None)
def test_density_is_the_exact_measure_of_the_window(n, k, j):
    x, h = Fraction(k, 2**20), Fraction(j, 2**22)
    got = fat_cantor_density(torch.tensor([float(x)], dtype=torch.float64), float(h), n).item()
    assert got == float((brute_cdf(x + h, n) - brute_cdf(x - h, n)) / (2 * h))
    assert 0.0 <= got <= 1.0


def test_density_at_gap_ends_and_inside_intervals():
    # 3/8 ends the left interval of C_1: half of a small window lies in the gap
    assert fat_cantor_density(torch.tensor([0.375], dtype=torch.float64), 2.0**-8, 1).item() == 0.5
    assert fat_cantor_density(torch.tensor([0.125], dtype=torch.float64), 2.0**-8, 1).item() == 1.0
    # the window [1/4, 3/4] holds the first gap (length 1/4) and 1/4 of C_1; deeper levels
    # remove more: gaps of level 3 (length 1/64) sit in [7/32, 3/8] and [5/8, 25/32]
    assert fat_cantor_density(torch.tensor([0.5], dtype=torch.float64), 0.25, 1).item() == 0.5
    assert fat_cantor_density(torch.tensor([0.5], dtype=torch.float64), 0.25, 3).item() < 0.5


def test_cdf_rejects_bad_levels():
    with pytest.raises(ValueError):
        fat_cantor_cdf(torch.zeros(1, dtype=torch.float64), MAX_LEVEL + 1)
    with pytest.raises(TypeError):
        fat_cantor_cdf(torch.zeros(1, dtype=torch.int64), 2)
