"""The perturbed-branch gradient (chapters lexicographic, training_valid), checked against three
independent oracles at kinks: autograd's gradient at ``x + e m`` (``e`` halved until stable),
the lexicographic gradient with ``M = [m, ...]``, and kinkcheck's convex-hull test; away from
ties it must be autograd's gradient."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

import mtlib
from mtlib import kinkcheck, lexicographic_gradient, perturbed_gradient
from mtlib.directional import jvp, ld_jvp
from mtlib.examples import boustany_f, maxpool_f
from mtlib.networks import integer_points, random_network
from mtlib.training import digits_cnn

f64 = torch.float64


def autograd_gradient(f, x):
    x = x.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(x), x)
    return g


def oracle(f, x, m, e=2.0**-8):
    """Autograd's gradient at x + e m for the largest e in {2^-8, 2^-9, ...} at which it equals the
    gradients at e/2 and e/4 (the ray then stays in one piece of the piecewise-linear f). With
    integer weights the gradient of a piece is a sum of products of integers: exact in float64."""
    for _ in range(12):
        grads = [autograd_gradient(f, x + e / 2**i * m) for i in range(3)]
        if all(torch.equal(grads[0], g) for g in grads[1:]):
            return grads[0]
        e /= 2
    raise AssertionError("no piece found along the perturbation")


def integer_net(n, pool, seed):
    net = random_network([n, 4, 4, 1], pool=pool, seed=seed, integer=True)
    return lambda v: net(v).sum()


# --- at integer kinks: equal to the perturbation oracle and to the lexicographic gradient -----


@pytest.mark.parametrize("pool", [0, 2])
@pytest.mark.parametrize("n", [2, 4])
def test_integer_relu_maxpool_networks_at_kinks_match_both_oracles(n, pool):
    gen = torch.Generator().manual_seed(10 * n + pool)
    kinks = 0
    for seed in range(10):
        f = integer_net(n, pool, seed)
        for x in integer_points(4, n, seed=seed):
            m = torch.randn(n, generator=gen, dtype=f64)
            g = perturbed_gradient(f, x, direction=m)
            assert torch.equal(g, oracle(f, x, m))  # exact: integer pieces
            M = torch.cat([m[:, None], torch.randn(n, n - 1, generator=gen, dtype=f64)], dim=1)
            torch.testing.assert_close(g, lexicographic_gradient(f, x, M), rtol=0, atol=1e-9)  # LU solve
            kinks += bool((jvp(f, x, m)[1] + jvp(f, x, -m)[1]).abs() > 1e-12)
    assert kinks >= 5  # the points do sit on kinks: f'(x; m) != -f'(x; -m) for several


def test_max_min_abs_clamp_network_matches_the_oracle():
    gen = torch.Generator().manual_seed(5)
    for seed in range(30):
        A, B = (torch.randint(-2, 3, (6, 3), generator=gen).to(f64) for _ in range(2))

        def f(v, A=A, B=B):
            y, z = A @ v, B @ v
            pooled = F.max_pool1d(y.view(1, 1, 6), 2).sum() + F.adaptive_max_pool1d(z.view(1, 1, 6), 2).sum()
            return (torch.maximum(y.amax(), z.min()) - z.abs().sum() + pooled + y.clamp(-1, 1).sum()
                    + F.hardtanh(z).sum() - F.relu6(y).sum() + F.leaky_relu(z, 0.25).sum())

        x, m = integer_points(1, 3, seed=seed)[0], torch.randn(3, generator=gen, dtype=f64)
        assert torch.equal(perturbed_gradient(f, x, direction=m), oracle(f, x, m))


@pytest.mark.parametrize("ties", ["first", "uniform"])
def test_tie_aware_pools_and_torch_pools_match_the_oracle(ties):
    gen = torch.Generator().manual_seed(7)
    w = torch.randint(-2, 3, (3, 1, 1, 1), generator=gen).to(f64)
    head = torch.randint(-2, 3, (3,), generator=gen).to(f64)

    def f(v):
        y = torch.relu(F.conv2d(v.view(1, 1, 3, 4), w))
        pooled = (mtlib.max_pool2d(y, 2, ties=ties).sum((2, 3)) + F.max_pool2d(y, 2, 1).sum((2, 3))
                  + mtlib.adaptive_max_pool2d(y, (1, 2), ties=ties).sum((2, 3)))
        return (head * pooled).sum()

    for seed in range(10):
        x, m = integer_points(1, 12, seed=seed)[0], torch.randn(12, generator=gen, dtype=f64)
        assert torch.equal(perturbed_gradient(f, x, direction=m), oracle(f, x, m))


@pytest.mark.parametrize("n", [2, 3])
def test_kinkcheck_calls_it_clarke_valid(n):
    checked = 0
    for seed in range(6):
        f = integer_net(n, 2 if seed % 2 else 0, seed)
        for x in integer_points(2, n, seed=seed):
            g = perturbed_gradient(f, x, generator=torch.Generator().manual_seed(seed))
            assert kinkcheck(f, x, gradient=g, samples=8).verdict == "Clarke-valid"
            checked += 1
    assert checked == 12


def test_boustany_and_maxpool_functions_give_zero_at_the_tie_for_every_direction():
    t = torch.tensor(0.0, dtype=f64)
    gen = torch.Generator().manual_seed(0)
    directions = [1.0, -1.0, 0.5, -3.0, *torch.randn(8, generator=gen, dtype=f64).tolist()]
    assert (associated(boustany_f, t), associated(maxpool_f, t)) == (-1.5, -3.0)  # Tables 2-3
    for f in (boustany_f, maxpool_f, lambda s: maxpool_f(s, ties="uniform")):
        for s in directions:
            assert perturbed_gradient(f, t, direction=torch.tensor(s, dtype=f64)).item() == 0.0
    assert perturbed_gradient(boustany_f, t, generator=gen).item() == 0.0


def associated(f, t):
    return autograd_gradient(lambda s: f(s).reshape(()), t).item()


def test_ops_written_as_autograd_functions_follow_the_perturbed_point():
    """mtlib's max_uniform, max_first, relu_z and pools are autograd.Functions, whose forward runs
    with grad off: the tangents must stay differentiable there (not a silent zero gradient)."""
    x, d = torch.zeros(3, dtype=f64), torch.tensor([1.0, 3.0, 2.0], dtype=f64)
    pool = lambda v: mtlib.max_pool1d(v.view(1, 1, 3), 3, ties="uniform").sum()  # noqa: E731
    for f in (mtlib.max_uniform, mtlib.max_first, pool):
        assert perturbed_gradient(f, x, direction=d).tolist() == [0.0, 1.0, 0.0]
    d = torch.tensor([1.0, -1.0, 2.0], dtype=f64)
    g = perturbed_gradient(lambda v: mtlib.relu_z(v, z=0.5).sum(), x, direction=d)
    assert g.tolist() == [1.0, 0.0, 1.0]  # the side of the perturbed point, not the convention z


def test_a_registered_rule_built_with_the_dual_constructor_is_differentiated(monkeypatch):
    from mtlib.directional import Dual, register_rule
    from mtlib.directional._dual import RULES

    monkeypatch.setitem(RULES, torch.special.erfcx, None)  # restored after the test
    erfcx = [torch.special.erfcx]
    register_rule(erfcx, lambda func, args, kwargs: Dual(args[0].primal, 3 * args[0].tangent))
    x = torch.tensor([0.5, -1.0], dtype=f64)
    assert perturbed_gradient(lambda v: torch.special.erfcx(v).sum(), x).tolist() == [3.0, 3.0]
    register_rule(erfcx, lambda func, args, kwargs: Dual(args[0].primal, args[0].tangent.detach()))
    with pytest.raises(RuntimeError, match="no longer depends on the direction"):
        perturbed_gradient(lambda v: torch.special.erfcx(v).sum(), x, direction=torch.ones(2, dtype=f64))


# --- away from ties: autograd's gradient --------------------------------------------------------


def test_integer_networks_off_kinks_equal_autograd_exactly():
    gen = torch.Generator().manual_seed(3)
    for seed in range(10):
        f = integer_net(3, 2 if seed % 2 else 0, seed)
        x = torch.randn(3, generator=gen, dtype=f64)  # a kink is met with probability 0
        for _ in range(3):
            g = perturbed_gradient(f, x, direction=torch.randn(3, generator=gen, dtype=f64))
            assert torch.equal(g, autograd_gradient(f, x))


def cnn_params_and_loss(model, x, y):
    params = dict(model.named_parameters())
    return params, lambda p: F.cross_entropy(functional_call(model, p, (x,)), y)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cnn_parameters_as_a_dict_off_ties_equal_autograd(dtype):
    gen = torch.Generator().manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3), nn.LeakyReLU(0.1), nn.AvgPool2d(1), mtlib.MaxPool2d(2, ties="uniform"),
        nn.Flatten(), nn.Linear(4, 6), nn.Hardtanh(), nn.Linear(6, 3),
    ).to(dtype)
    model[1].running_mean.normal_(generator=gen)
    model[1].running_var.uniform_(0.5, 2.0, generator=gen)
    model.eval()
    x, y = torch.randn(5, 2, 8, 8, generator=gen, dtype=dtype), torch.tensor([0, 1, 2, 0, 1])
    params, loss = cnn_params_and_loss(model, x, y)
    g = perturbed_gradient(loss, params, generator=gen)
    want = dict(zip(params, torch.autograd.grad(loss(params), list(params.values()))))
    assert list(g) == list(params) and all(g[k].dtype == dtype for k in g)
    tol = {"rtol": 1e-10, "atol": 1e-14} if dtype == f64 else {"rtol": 1e-4, "atol": 1e-6}
    for name in params:  # the cross-entropy's reverse pass sums in another order: rounding only
        torch.testing.assert_close(g[name], want[name], **tol)


def test_softmax_and_log_softmax_losses_off_ties_equal_autograd():
    gen = torch.Generator().manual_seed(2)
    w = torch.randn(4, 3, generator=gen, dtype=f64)

    def f(w):
        z = torch.relu(torch.randn(6, 4, generator=torch.Generator().manual_seed(0), dtype=f64) @ w)
        return (F.softmax(z, -1)[:, 0] * F.log_softmax(z, -1).amax(-1)).sum()

    torch.testing.assert_close(perturbed_gradient(f, w, generator=gen), autograd_gradient(f, w),
                               rtol=1e-12, atol=1e-15)


# --- the training chapter's network at a tie: the gradient of x + e m ---------------------------


def test_digits_cnn_with_integer_weights_is_the_gradient_at_the_perturbed_parameters():
    """Integer weights and pixels: the convolutions are exact, and ReLU zeros and pool ties
    depend on the parameters. The result is the gradient at params + e m up to O(e) (the
    cross-entropy is smooth, not linear); autograd's own gradient at params differs."""
    gen = torch.Generator().manual_seed(4)
    model = digits_cnn(2, ties="first")
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randint(-1, 2, p.shape, generator=gen))
    x, y = torch.randint(0, 2, (4, 1, 8, 8), generator=gen).to(f64), torch.tensor([3, 7, 0, 1])
    params, loss = cnn_params_and_loss(model, x, y)
    names, sizes = list(params), [p.numel() for p in params.values()]

    def as_dict(v):
        return {k: t.reshape(params[k].shape) for k, t in zip(names, v.split(sizes))}

    flat = torch.cat([p.detach().reshape(-1) for p in params.values()])
    m = torch.randn(flat.shape, generator=gen, dtype=f64)
    g = perturbed_gradient(loss, params, direction=as_dict(m))
    got = torch.cat([g[k].reshape(-1) for k in names])
    errors = [(got - autograd_gradient(lambda v: loss(as_dict(v)), flat + e * m)).abs().max()
              for e in (2.0**-14, 2.0**-18, 2.0**-22)]
    assert errors[2] < 1e-5 and errors[2] < errors[1] < errors[0], errors  # O(e): the smooth loss
    pytorch = torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss(params), list(params.values()))])
    assert (pytorch - got).abs().max() > 1e-3  # the ties do matter here


# --- fast paths agree with the general ones ------------------------------------------------------


@pytest.mark.parametrize("pool", [
    lambda v: F.max_pool2d(v, 2),
    lambda v: F.max_pool2d(v, (2, 3)),                       # cells after the last window
    lambda v: F.max_pool1d(v.flatten(2), 3),
    lambda v: F.max_pool3d(v.unsqueeze(2), (1, 2, 2)),
    lambda v: F.adaptive_max_pool2d(v, (3, 2)),
    lambda v: mtlib.max_pool2d(v, 2, ties="uniform"),
    lambda v: mtlib.adaptive_max_pool1d(v.flatten(2), 4),
])
def test_one_tangent_pool_path_equals_the_lexicographic_path(pool):
    """With one tangent, windows that tile the input take a masked torch max pool; with two
    tangents the general windows path runs. Their first columns must agree, at integer ties."""
    gen = torch.Generator().manual_seed(11)
    for _ in range(5):
        x = torch.randint(-1, 2, (2, 3, 6, 8), generator=gen).to(f64)
        d = torch.randint(-2, 3, x.shape, generator=gen).to(f64)  # ties among tangents too
        one = jvp(pool, x, d)[1]
        two = ld_jvp(pool, x, torch.stack([d, torch.randn(x.shape, generator=gen, dtype=f64)], -1))[1]
        assert torch.equal(one, two[..., 0])


def test_one_tangent_pool_path_with_infinite_values_equals_the_lexicographic_path():
    """A window whose maximum is +inf (twice) or whose entries are all -inf: its tie set is
    where the value equals the window's maximum (inf - inf is NaN, not 0), as in the general
    path; the third row lies after the last window."""
    inf = float("inf")
    x = torch.tensor([[[[inf, 1.0, -inf, -inf], [2.0, inf, -inf, -inf], [0.0, 0.0, 5.0, 5.0]]]], dtype=f64)
    d = torch.tensor([[[[1.0, 2.0, 3.0, -1.0], [4.0, -5.0, 6.0, 7.0], [8.0, 9.0, -1.0, 2.0]]]], dtype=f64)
    for pool in (lambda v: F.max_pool2d(v, 2), lambda v: mtlib.max_pool2d(v, 2, ties="uniform")):
        one = jvp(pool, x, d)[1]
        two = ld_jvp(pool, x, torch.stack([d, torch.ones_like(d)], -1))[1]
        assert one.flatten().tolist() == [1.0, 7.0] and torch.equal(one, two[..., 0])
    g = perturbed_gradient(lambda v: F.max_pool2d(v, 2).sum(), x, direction=d)
    assert g.flatten().tolist() == [1.0] + [0.0] * 6 + [1.0] + [0.0] * 4  # the winners (0, 0) and (1, 3)


def test_linear_and_conv_with_perturbed_weights_equal_torch_func_jvp():
    gen = torch.Generator().manual_seed(12)
    x, w, b = (torch.randn(s, generator=gen, dtype=f64) for s in ((2, 3, 5, 5), (4, 3, 3, 3), (4,)))
    tx, tw, tb = (torch.randn(a.shape, generator=gen, dtype=f64) for a in (x, w, b))
    lw = torch.randn(7, 5, generator=gen, dtype=f64)
    for fn, args, tangents in [
        (lambda a, c, e: F.conv2d(a, c, e, padding=1), (x, w, b), (tx, tw, tb)),
        (lambda a, c, e: F.conv2d(a, c, e, stride=2, groups=1), (x, w, b), (tx, tw, tb)),
        (lambda a, c, e: F.linear(a, c, e), (x, lw, lw[:, 0]), (tx, lw.flip(0), lw[:, 1])),
    ]:
        want = torch.func.jvp(fn, args, tangents)[1]
        got = fn(*(mtlib.Dual(a, t) for a, t in zip(args, tangents))).tangent
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        M = [torch.stack([t, 2 * t], -1) for t in tangents]  # k = 2 tangents on every argument
        two = fn(*(mtlib.Dual(a, tangents=m.movedim(-1, 0)) for a, m in zip(args, M))).tangents
        torch.testing.assert_close(two[1], 2 * want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("pick", [
    lambda v: torch.cat([p * (i + 1) for i, p in enumerate(v.split([4, 8]))]),
    lambda v: torch.stack(v.view(3, 4).unbind(1)) + torch.stack(torch.chunk(v, 3)).T,
    lambda v: v.view(3, 4)[1:, ::2].flatten() + v[torch.tensor([2, 0, 1, 5])] + v[v > 0].sum(),
    lambda v: v.view(3, 4).permute(1, 0).flip(0).roll(1, 1).transpose(0, 1),
    lambda v: v.view(3, 4).mT.t().narrow(0, 1, 2).select(1, 0),
    lambda v: torch.index_select(v.view(3, 4), 1, torch.tensor([2, 0])).gather(0, torch.tensor([[1, 2]])),
    lambda v: torch.take_along_dim(v.view(3, 4), torch.tensor([[1], [0], [3]]), 1) + v.view(3, 4).diagonal(),
    lambda v: v.view(3, 4).tril().triu(-1).repeat(2, 1).tile(1, 2) + v.view(1, 12).expand(6, 12)[:, :8],
    lambda v: torch.movedim(v.view(2, 3, 2), 0, 2).swapaxes(0, 1).broadcast_to(2, 2, 3, 2),
])
def test_one_tangent_selections_equal_torch_func_jvp(pick):
    """Selections and reorderings of one dual take the same op on its tangent (k = 1); with two
    tangents torch.func.jvp runs under vmap. Both must be exact: they only move numbers."""
    gen = torch.Generator().manual_seed(14)
    x, d, d2 = (torch.randn(12, generator=gen, dtype=f64) for _ in range(3))
    want = torch.func.jvp(pick, (x,), (d,))[1]
    assert torch.equal(jvp(pick, x, d)[1], want)
    assert torch.equal(ld_jvp(pick, x, torch.stack([d, d2], -1))[1][..., 0], want)
    f = lambda v: (pick(v) ** 2).sum()  # noqa: E731
    torch.testing.assert_close(perturbed_gradient(f, x, direction=d), autograd_gradient(f, x),
                               rtol=1e-12, atol=0)


@pytest.mark.parametrize("kwargs", [{}, {"reduction": "sum"}, {"ignore_index": 2}, {"label_smoothing": 0.1},
                                    {"weight": torch.tensor([0.5, 1.0, 2.0, 1.5], dtype=f64)}])
def test_cross_entropy_tangent_equals_torch_func_jvp(kwargs):
    """The written-out cross-entropy rule (and the torch.func fallback for weights and smoothing)."""
    gen = torch.Generator().manual_seed(13)
    z, t, t2 = (torch.randn(6, 4, generator=gen, dtype=f64) for _ in range(3))
    y = torch.tensor([0, 1, 2, 3, 2, 1])

    def f(a):
        return F.cross_entropy(a, y, **kwargs)

    want, want2 = (torch.func.jvp(f, (z,), (d,))[1] for d in (t, t2))
    torch.testing.assert_close(jvp(f, z, t)[1], want, rtol=1e-12, atol=1e-15)
    two = ld_jvp(f, z, torch.stack([t, t2], -1))[1]
    torch.testing.assert_close(two, torch.stack([want, want2]), rtol=1e-12, atol=1e-15)


# --- structure, cost and errors ------------------------------------------------------------------


def test_structure_dtype_and_constant_outputs():
    a, b = torch.tensor([1.0, -2.0]), torch.tensor(0.5, dtype=f64)
    g = perturbed_gradient(lambda p: (p[0].relu() * p[1]).sum(), (a, b))
    assert isinstance(g, tuple) and g[0].dtype == torch.float32 and g[1].dtype == f64
    assert g[0].tolist() == [0.5, 0.0] and g[1].item() == 1.0
    g = perturbed_gradient(lambda p: (p["u"][0] * 0).sum() + torch.tensor(3.0), {"u": [a], "v": b})
    assert list(g) == ["u", "v"] and g["u"][0].tolist() == [0.0, 0.0] and g["v"].item() == 0.0
    assert perturbed_gradient(lambda p: torch.ones(()), a).tolist() == [0.0, 0.0]


def test_one_forward_pass_and_a_seeded_direction():
    calls = []

    def f(v):
        calls.append(1)
        return torch.relu(v).sum()

    x = torch.zeros(5, dtype=f64)
    first = perturbed_gradient(f, x, generator=torch.Generator().manual_seed(3))
    again = perturbed_gradient(f, x, generator=torch.Generator().manual_seed(3))
    assert len(calls) == 2 and torch.equal(first, again)
    m = torch.randn(5, generator=torch.Generator().manual_seed(3)).to(f64)
    assert torch.equal(first, (m > 0).to(f64))  # relu'(0; m) = max(m, 0): slope 1 where m > 0


@pytest.mark.parametrize("f, match", [
    (lambda v: torch.sort(v).values[0], "sort"),
    (lambda v: torch.median(v), "median"),
    (lambda v: F.elu(v).sum(), "elu"),
    (lambda v: F.max_pool1d(v.view(1, 1, 4), 2, return_indices=True)[0].sum(), "return_indices"),
    (lambda v: v.relu_().sum(), "in-place"),
    (lambda v: torch.tensor(v.max().item()), "drop the tangent"),
])
def test_unsupported_nonsmooth_ops_raise_naming_the_op(f, match):
    with pytest.raises(NotImplementedError, match=match):
        perturbed_gradient(f, torch.zeros(4, dtype=f64))


def test_bad_arguments_raise():
    x = torch.zeros(3, dtype=f64)
    with pytest.raises(TypeError, match="`f` must be callable"):
        perturbed_gradient(3, x)
    with pytest.raises(TypeError, match="`inputs` must be a torch.Tensor"):
        perturbed_gradient(torch.sum, 1.0)
    with pytest.raises(TypeError, match="entry 1 of `inputs` must be a torch.Tensor"):
        perturbed_gradient(lambda p: p[0].sum(), (x, "w"))
    with pytest.raises(TypeError, match="floating-point"):
        perturbed_gradient(lambda p: p.sum(), torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="shape"):
        perturbed_gradient(torch.sum, x, direction=torch.zeros(4, dtype=f64))
    with pytest.raises(ValueError, match="structure"):
        perturbed_gradient(lambda p: p["a"].sum(), {"a": x}, direction={"b": x})
    with pytest.raises(TypeError, match="generator"):
        perturbed_gradient(torch.sum, x, generator=0)
    with pytest.raises(ValueError, match="one number"):
        perturbed_gradient(lambda v: v * 2, x)
    with pytest.raises(TypeError, match="must return a tensor"):
        perturbed_gradient(lambda v: 1.0, x)
