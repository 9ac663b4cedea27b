"""The compiled CPU forward (mtlib.maxpool._compiled): the same values, companion indices and
gradients as the definitions, on ties, NaN, inf, padding, dilation, ceil mode, empty windows,
1-d/2-d/3-d pools and 16-bit floats; that it runs exactly on windows of at most MAX_TAPS taps
(larger ones and every backward: the C kernel); the switch and the fallback when compiling
fails."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from helpers import assert_same, pool_and_grad, pool_oracle, strided_windows, ties_input

import mtlib.maxpool as mp
from mtlib.maxpool import _compiled
from mtlib.maxpool._geometry import pool_axes

pytestmark = pytest.mark.slow  # each new geometry compiles (about 1 to 5 s)

# (pool, input shape, kernel, stride, padding, dilation, ceil_mode, dtype)
CASES = [
    (mp.max_pool2d, (2, 3, 7, 8), (3, 3), (2, 2), (1, 1), (1, 1), True, torch.bfloat16),
    (mp.max_pool2d, (1, 2, 9, 6), (3, 2), (2, 1), (1, 1), (1, 2), False, torch.float64),
    (mp.max_pool2d, (1, 2, 5, 5), (2, 2), (2, 2), (1, 1), (3, 3), True, torch.float64),
    (mp.max_pool2d, (2, 2, 2, 7), (2, 3), (1, 2), (1, 1), (3, 1), False, torch.float64),  # empty
    (mp.max_pool1d, (2, 3, 11), (3,), (2,), (1,), (2,), True, torch.float16),
    (mp.max_pool3d, (1, 2, 5, 6, 7), (3, 3, 3), (2, 2, 2), (1, 1, 1), (1, 1, 1), False,
     torch.float32),
    (mp.max_pool3d, (1, 2, 5, 6, 7), (2, 2, 3), (2, 1, 2), (1, 0, 1), (2, 1, 1), True,
     torch.float64),
    # more than MAX_TAPS taps: not compiled (the C kernel)
    (mp.max_pool2d, (1, 2, 8, 7), (6, 5), (2, 1), (3, 2), (1, 1), True, torch.float64),
    (mp.max_pool3d, (1, 2, 4, 6, 8), (2, 3, 6), (1, 2, 3), (1, 1, 3), (1, 1, 1), False,
     torch.bfloat16),
    # disjoint windows
    (mp.max_pool2d, (2, 3, 7, 9), (2, 3), (2, 3), (1, 1), (1, 1), True, torch.bfloat16),
    (mp.max_pool2d, (2, 3, 10, 12), (2, 2), (5, 4), (0, 1), (4, 2), True, torch.float64),
    (mp.max_pool3d, (1, 2, 4, 6, 6), (2, 2, 2), (2, 2, 2), (0, 0, 0), (1, 1, 1), False,
     torch.bfloat16),
    (mp.max_pool2d, (1, 3, 7, 7), (7, 7), (7, 7), (0, 0), (1, 1), False, torch.float16),
]


@pytest.fixture
def compile_everything(monkeypatch):
    """The compiled function for inputs of any size, and a record of its calls."""
    calls = []
    original = _compiled._compiled

    def spy(*args):
        calls.append(args[2])
        return original(*args)

    monkeypatch.setattr(_compiled, "MIN_NUMEL", 0)
    monkeypatch.setattr(_compiled, "_compiled", spy)
    return calls


def _special_values(x, gen):
    """A few NaN, inf and -inf entries (a NaN window, windows of -inf and of +inf)."""
    pos = torch.randperm(x.numel(), generator=gen)
    x.view(-1)[pos[:2]] = float("nan")
    x.view(-1)[pos[2:6]] = float("inf")
    x.view(-1)[pos[6:12]] = float("-inf")
    return x


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0].__name__}{c[1]}k{c[2]}")
def test_compiled_forward_is_the_definition(case, compile_everything):
    pool, shape, kernel, stride, padding, dilation, ceil_mode, dtype = case
    gen = torch.Generator().manual_seed(len(shape) + kernel[0])
    x = _special_values(ties_input(shape, dtype, seed=kernel[0]), gen)
    n = len(kernel)
    axes = pool_axes(shape[2:], kernel, stride, padding, dilation, ceil_mode)
    windows = [strided_windows(ax.size, *a, ax.out) for ax, *a in
               zip(axes, kernel, stride, padding, dilation)]
    out_shape = (*shape[:2], *(ax.out for ax in axes))
    g = torch.randint(-3, 4, out_shape, generator=gen).to(dtype) / 2
    args = (kernel, stride, padding, dilation, ceil_mode)
    for ties in ("last", "uniform"):
        ref_y, ref_g, counts, index = pool_oracle(x, g, windows, ties)
        compile_everything.clear()
        y, gx = pool_and_grad(pool, x, g, *args, ties=ties, backend="torch")
        compiled = math.prod(kernel) <= _compiled.MAX_TAPS and (
            n < 3 or dtype.itemsize > 2)  # 16-bit 3-d pools: the C kernel
        assert compile_everything == [ties] * compiled
        assert_same(y, ref_y)
        assert_same(gx, ref_g)
        if ties == "last":
            assert torch.equal(pool(x, *args, return_indices=True, ties=ties)[1], index)
        elif n >= 2:
            tally = mp.window_tie_counts if n == 2 else mp.window_tie_counts3d
            assert torch.equal(tally(x, *args, backend="torch"), counts)


def test_small_inputs_and_the_switch_skip_compiling(monkeypatch):
    x = torch.zeros(1, 1, 4, 4)
    axes = pool_axes((4, 4), (2, 2), (2, 2), (0, 0), (1, 1), False)
    assert _compiled.forward(x, axes, "uniform") is None  # below MIN_NUMEL
    monkeypatch.setattr(_compiled, "MIN_NUMEL", 0)
    monkeypatch.setenv("MTLIB_POOL_COMPILE", "0")
    assert _compiled.forward(x, axes, "uniform") is None
    monkeypatch.delenv("MTLIB_POOL_COMPILE")
    adaptive = pool_axes((5, 5), None, None, None, None, False, (3, 3))
    assert not _compiled.enabled(x.new_zeros(1, 1, 5, 5), adaptive)  # windows of two lengths
    large = pool_axes((6, 6), (6, 6), (6, 6), (0, 0), (1, 1), False)
    assert not _compiled.enabled(x.new_zeros(1, 1, 6, 6), large)  # more than MAX_TAPS taps
    assert not _compiled.enabled(x.to(torch.float64).to("meta"), axes)


def test_a_failed_compile_warns_once_and_falls_back(monkeypatch):
    def broken(*args):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(_compiled, "MIN_NUMEL", 0)
    monkeypatch.setattr(_compiled, "_compiled", broken)
    monkeypatch.setitem(_compiled._state, "failed", None)
    x = ties_input((1, 2, 6, 6), seed=3)
    g = torch.randint(-3, 4, (1, 2, 3, 3), generator=torch.Generator().manual_seed(4)).double()
    windows = [strided_windows(6, 2, 2, 0, 1, 3)] * 2
    with pytest.warns(RuntimeWarning, match="no C.. compiler"):
        y, gx = pool_and_grad(mp.max_pool2d, x, g, 2, ties="uniform", backend="torch")
    assert "no C++ compiler" in _compiled._state["failed"]
    ref_y, ref_g, _, _ = pool_oracle(x, g, windows, "uniform")
    assert_same(y, ref_y)
    assert_same(gx, ref_g)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the C kernel from now on, silently
        assert_same(pool_and_grad(mp.max_pool2d, x, g, 2, ties="uniform", backend="torch")[1],
                    ref_g)
