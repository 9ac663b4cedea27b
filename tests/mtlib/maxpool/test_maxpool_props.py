"""Property tests of the tie-aware max pool over random geometries and tie-heavy inputs.

Each output's row of the pool's Jacobian must be a valid associated gradient of ``max`` on its
window (Sec 4.2: weights on the tie set summing to 1, zero elsewhere), so the gradient mass of
every output is conserved; "first" must be PyTorch's gradient, "uniform" the equal split of
eq 20, and the forward-mode Jacobian the transpose of the reverse-mode one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mtlib.maxpool import max_pool1d, max_pool2d, window_tie_counts
from mtlib.maxpool._geometry import pool_axes
from mtlib.ties import check_tangent

RULES = ("first", "last", "uniform")


@st.composite
def pools(draw):
    """A 1-d or 2-d pool with a valid geometry and an input of small integers (many ties)."""
    dims = draw(st.sampled_from([1, 2]))
    kernel = [draw(st.integers(1, 3)) for _ in range(dims)]
    stride = [draw(st.integers(1, 3)) for _ in range(dims)]
    dilation = [draw(st.integers(1, 2)) for _ in range(dims)]
    padding = [draw(st.integers(0, k // 2)) for k in kernel]
    ceil_mode = draw(st.booleans())
    size = [draw(st.integers(1, 7)) for _ in range(dims)]
    shape = [draw(st.integers(1, 2)), draw(st.integers(1, 2)), *size]
    pad = 2 - dims  # a 1-d pool is a 2-d pool of height 1
    geometry2 = ([1] * pad + kernel, [1] * pad + stride, [0] * pad + padding,
                 [1] * pad + dilation, ceil_mode)
    axes2 = pool_axes(tuple([1] * pad + size), *geometry2)
    assume(all(a.out > 0 for a in axes2))
    values = draw(st.lists(st.sampled_from([-1.0, 0.0, 1.0, 1.0, float("nan")]),
                           min_size=torch.Size(shape).numel(),
                           max_size=torch.Size(shape).numel()))
    x = torch.tensor(values, dtype=torch.float64).view(shape)
    geometry = (kernel, stride, padding, dilation, ceil_mode)
    return dims, x, geometry, geometry2, axes2, draw(st.sampled_from(RULES))


def pool_fn(dims):
    return max_pool1d if dims == 1 else max_pool2d


def windows(axes2, oh, ow):
    """Input positions (ih, iw) read by output (oh, ow), padding excluded."""
    ah, aw = axes2
    return [(ih, iw)
            for ih in (oh * ah.stride + i * ah.dilation - ah.padding for i in range(ah.kernel))
            for iw in (ow * aw.stride + j * aw.dilation - aw.padding for j in range(aw.kernel))
            if 0 <= ih < ah.size and 0 <= iw < aw.size]


@settings(max_examples=150, deadline=None)
@given(pools())
def test_values_match_torch(case):
    dims, x, geometry, _, _, ties = case
    torch_pool = F.max_pool1d if dims == 1 else F.max_pool2d
    torch.testing.assert_close(pool_fn(dims)(x, *geometry, ties=ties, backend="torch"),
                               torch_pool(x, *geometry), rtol=0, atol=0, equal_nan=True)


@settings(max_examples=150, deadline=None)
@given(pools())
def test_every_output_row_is_an_associated_gradient_of_its_window_max(case):
    """Mass conservation per output, support on the tie set, uniform = 1/N (eq 20)."""
    dims, x, geometry, geometry2, axes2, ties = case

    def pool(x):
        return pool_fn(dims)(x, *geometry, ties=ties, backend="torch")

    jac = torch.func.jacrev(pool)(x)
    assert torch.equal(jac, torch.func.jacfwd(pool)(x))  # reverse = transpose of forward mode
    x4 = x.view(x.shape[0], x.shape[1], axes2[0].size, axes2[1].size)
    out_shape = (*x4.shape[:2], axes2[0].out, axes2[1].out)
    jac = jac.reshape(*out_shape, *x4.shape)
    counts = window_tie_counts(x4, *geometry2, backend="torch")
    for n, c, oh, ow in torch.cartesian_prod(*(torch.arange(s) for s in out_shape)).tolist():
        row, taps = jac[n, c, oh, ow], windows(axes2, oh, ow)
        inside = torch.zeros_like(x4, dtype=torch.bool)
        for ih, iw in taps:
            inside[n, c, ih, iw] = True
        assert not row[~inside].any()
        if not taps:
            assert counts[n, c, oh, ow] == 0
            continue
        window_x = torch.stack([x4[n, c, ih, iw] for ih, iw in taps])
        window_g = torch.stack([row[n, c, ih, iw] for ih, iw in taps])
        assert check_tangent(window_x, window_g, convex=True), (window_x, window_g)
        support = window_g != 0
        if ties == "uniform":
            assert int(support.sum()) == counts[n, c, oh, ow]
            assert torch.all(window_g[support] == 1.0 / counts[n, c, oh, ow].item())
        else:
            assert int(support.sum()) == 1 and window_g[support].item() == 1.0
            nan = window_x.isnan()
            tie = (nan if nan.any() else window_x == window_x.max()).nonzero().flatten()
            # "first": first max, or the last NaN (PyTorch's scan); "last": the mirror image
            expected = tie[0] if (ties == "first") != bool(nan.any()) else tie[-1]
            assert support.nonzero().item() == expected


@settings(max_examples=150, deadline=None)
@given(pools(), st.integers(0, 2**31 - 1))
def test_first_is_pytorch_gradient_and_mass_is_conserved(case, seed):
    dims, x, geometry, _, axes2, ties = case
    assume(all(ax.empty_windows() is None or not ax.empty_windows().any() for ax in axes2))
    torch_pool = F.max_pool1d if dims == 1 else F.max_pool2d
    xt, xm = x.clone().requires_grad_(), x.clone().requires_grad_()
    yt = torch_pool(xt, *geometry)
    g = torch.randn(yt.shape, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(seed))
    yt.backward(g)
    pool_fn(dims)(xm, *geometry, ties=ties, backend="torch").backward(g)
    if ties == "first":
        assert torch.equal(xm.grad, xt.grad)
    torch.testing.assert_close(xm.grad.sum(), g.sum(), rtol=1e-12, atol=1e-12)
