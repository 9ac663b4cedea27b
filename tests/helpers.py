"""Helpers shared by several test modules (no test module imports another).

``pytest`` puts ``tests/`` on ``sys.path`` (``pythonpath`` in ``pyproject.toml``)."""

from __future__ import annotations

import ast
import itertools
import json
import math
from pathlib import Path

import torch


def share(g: torch.Tensor, count: int) -> torch.Tensor:
    """g / count rounded once to g's dtype (float32 arithmetic for 16-bit floats)."""
    acc = torch.float32 if g.element_size() < 4 else g.dtype
    return (g.to(acc) / count).to(g.dtype)


def pool_and_grad(fn, x, g, *args, **kw):
    xg = x.clone().requires_grad_()
    y = fn(xg, *args, **kw)
    y.backward(g)
    return y.detach(), xg.grad


def assert_same(a, b):
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


# --- what a source uses of mtlib (test_api, test_chapter_lines) ----------------------------------

def mtlib_paths(source: str) -> set[tuple[str, str | None]]:
    """(module, name) for every ``from mtlib... import name``, (module, None) for ``import mtlib...``,
    and (module, attribute) for every ``mtlib.x.y`` attribute chain in ``source``; notebook magics
    (``%pip``, ``!ls``) are skipped, and a source that does not parse uses nothing."""
    code = "\n".join("pass" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return set()
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "mtlib":
            used.update((node.module, alias.name) for alias in node.names)
        elif isinstance(node, ast.Import):
            used.update((a.name, None) for a in node.names if a.name.split(".")[0] == "mtlib")
        elif isinstance(node, ast.Attribute):
            chain, value = [node.attr], node.value
            while isinstance(value, ast.Attribute):
                chain.append(value.attr)
                value = value.value
            if isinstance(value, ast.Name) and value.id == "mtlib":
                used.add((".".join(["mtlib", *reversed(chain[1:])]), chain[0]))
    return used


def code_cells(notebook: Path) -> list[str]:
    """The sources of a notebook's code cells."""
    return ["".join(cell["source"]) for cell in json.loads(notebook.read_text())["cells"]
            if cell["cell_type"] == "code"]


# --- the perturbation oracle (test_lexicographic) ------------------------------------------------

def autograd_gradient(f, x: torch.Tensor) -> torch.Tensor:
    """The gradient autograd returns for ``f(x).sum()`` at ``x``."""
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(x).sum(), x)
    return g


def perturbed(x: torch.Tensor, M: torch.Tensor, e: float) -> torch.Tensor:
    """x + e m_1 + e^2 m_2 + ... + e^k m_k (M of shape (*x.shape, k)), or x + e m (M of x's shape)."""
    if M.shape == x.shape:
        M = M.unsqueeze(-1)
    powers = torch.tensor([e ** (j + 1) for j in range(M.shape[-1])], dtype=x.dtype)
    return x + (M * powers).sum(-1)


def perturbation_oracle(f, x: torch.Tensor, M: torch.Tensor, e: float = 2.0**-8) -> torch.Tensor:
    """Autograd's gradient at the perturbed point, for the largest e in {2^-8, 2^-9, ...} at
    which it agrees with the gradients at e/2 and e/4 (the curve then stays in one piece; a
    piecewise-linear f has finitely many kinks on it). With integer x, weights and M and
    n <= 4 directions, the perturbed point and the network's values are exact in float64
    (at most 2^10 in size, 2^-32 in resolution). For a piecewise-linear f it is the
    lexicographic gradient at x along M (with one direction m: the gradient of the piece that
    x + e m enters), computed independently of mtlib.directional."""
    for _ in range(12):
        grads = [autograd_gradient(f, perturbed(x, M, e / 2**i)) for i in range(3)]
        if all(torch.equal(grads[0], g) for g in grads[1:]):
            return grads[0]
        e /= 2
    raise AssertionError("no piece found along the perturbation")


def fixed_backward(forward, weights):
    """``forward`` (a torch function of a flat vector) whose backward returns the rows ``weights``:
    a backward rule injected on purpose, to test the instruments that judge it."""
    w = torch.tensor(weights, dtype=torch.float64)

    class Rule(torch.autograd.Function):
        @staticmethod
        def forward(x):
            return forward(x)

        @staticmethod
        def setup_context(ctx, inputs, output):
            pass

        @staticmethod
        def backward(ctx, grad):
            return grad.reshape(-1) @ w.reshape(grad.numel(), -1)

        @staticmethod
        def jvp(ctx, tangent):  # forward mode applies the same rows
            return (w.reshape(-1, tangent.numel()) @ tangent).reshape(w.shape[:-1])

    return Rule.apply


# --- brute-force max pools (the maxpool suites) ---------------------------------------------------

def strided_windows(size, kernel, stride, padding, dilation, out):
    """Per output, the input indices of its taps inside the input (the definition, not PoolAxis)."""
    return [[t for i in range(kernel) if 0 <= (t := o * stride - padding + i * dilation) < size]
            for o in range(out)]


def adaptive_windows(size, out):
    """PyTorch's adaptive windows: [floor(o L / out), ceil((o + 1) L / out))."""
    return [list(range(o * size // out, -(-(o + 1) * size // out))) for o in range(out)]


def pool_oracle(x, g, windows, ties):
    """Window by window from the definitions, on ``(N, C, *S)`` float ``x`` with ``windows`` one
    list of per-output index lists per spatial axis: ``(out, grad, counts, index)``.

    Taps in row-major order; the tie set is the entries equal to the max, or the NaN entries of
    a NaN window ("first" then takes the last one, as PyTorch's scan; "last" the first). An
    empty window gives -inf, count 0 and index -1. ``grad`` accumulates in x's dtype: windows
    that send to one entry in row-major window order, then ("uniform") the windows with ties
    add their shares, in row-major window order (mtlib's documented order)."""
    spatial = x.shape[2:]
    outs = [len(w) for w in windows]
    out = torch.full((*x.shape[:2], *outs), float("-inf"), dtype=x.dtype)
    counts = torch.zeros(out.shape, dtype=torch.int32)
    index = torch.full(out.shape, -1, dtype=torch.long)
    grad = torch.zeros_like(x)
    flat_x, flat_g = x.reshape(*x.shape[:2], -1), grad.view(*x.shape[:2], -1)
    tied = []
    for b, c in itertools.product(range(x.shape[0]), range(x.shape[1])):
        for o in itertools.product(*(range(n) for n in outs)):
            taps = [sum(i * math.prod(spatial[d + 1:]) for d, i in enumerate(t))
                    for t in itertools.product(*(w[i] for w, i in zip(windows, o)))]
            if not taps:
                continue
            vals = [flat_x[b, c, t].item() for t in taps]
            nans = [t for t, v in zip(taps, vals) if math.isnan(v)]
            top = float("nan") if nans else max(vals)
            tie = nans or [t for t, v in zip(taps, vals) if v == top]
            out[(b, c, *o)], counts[(b, c, *o)] = top, len(tie)
            gw = g[(b, c, *o)]
            if ties == "uniform" and len(tie) >= 2:
                tied.append((b, c, tie, share(gw, len(tie))))
            else:
                pick = tie[0] if (ties == "first") != bool(nans) else tie[-1]
                flat_g[b, c, pick] += gw
                index[(b, c, *o)] = pick
    for b, c, tie, gs in tied:
        for t in tie:
            flat_g[b, c, t] += gs
    return out, grad, counts, index


def ties_input(shape, dtype=torch.float64, seed=0, nan=False):
    """Entries in {-1, 0, 1} so that most windows have ties; optionally a few NaN."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(-1, 2, shape, generator=gen).to(dtype)
    if nan:
        x.view(-1)[torch.randperm(x.numel(), generator=gen)[:2]] = float("nan")
    return x
