"""Helpers shared by several test modules (no test module imports another).

``pytest`` puts ``tests/`` on ``sys.path`` (``pythonpath`` in ``pyproject.toml``)."""

from __future__ import annotations

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
