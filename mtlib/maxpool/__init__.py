"""Tie-aware max pooling: PyTorch's ``max_pool1d/2d`` with a chosen associated gradient.

Where two or more entries of a pooling window are equal to its max, max pooling is not
differentiable and autograd must pick a gradient. Every sensible pick is an associated gradient
(Def 1, eq 7) of one piecewise representation of ``max`` (Sec 4.3); the paper's Sec 4.4 shows
that PyTorch's ``MaxPool1d`` picks the first maximal entry, which gives the null function
``f(t) = maxpool1d(t, 4t) - maxpool1d(4t, t)`` the derivative -3 at ``t = 0``. Here ``ties``
names the rule, per window ``w`` with upstream gradient ``g_w`` and tie set ``T_w`` (entries
equal to the window max):

* ``"first"``: ``g_w`` to the first entry of ``T_w`` in row-major window order, exactly
  PyTorch's gradient (representation (17)-(18));
* ``"last"``: ``g_w`` to the last entry of ``T_w`` (the mirror image);
* ``"uniform"``: ``g_w / |T_w|`` to every entry of ``T_w``, the symmetrised associated gradient
  (19)-(20) of the paper applied window by window; it gives ``f'(0) = 0`` in Sec 4.4.

Overlapping windows add their contributions; padding holds no value and receives nothing.
A NaN in a window makes its output NaN, as in PyTorch; its tie set is then the window's NaN
entries: ``"first"`` sends the gradient to the *last* NaN (PyTorch's ``v > max or isnan(v)``
scan), ``"last"`` to the first NaN, ``"uniform"`` splits it among all of them.

Every pool is a drop-in for PyTorch's: same arguments, values, ``return_indices``, memory
format (channels-last inputs give channels-last outputs and gradients, as PyTorch's pools),
``torch.compile(fullgraph=True)`` under dynamic shapes, and errors where PyTorch raises them, of
PyTorch's class. Deliberate differences: an argument error is also a ``ValueError`` or
``TypeError`` (:class:`~mtlib.maxpool._args.PoolArgumentError`) and its message names mtlib's
argument; an adaptive pool with an output size 0 raises at the call (PyTorch raises in the
backward); ``return_indices`` with ``ties="uniform"`` raises (no single entry per window); a
window lying entirely in the padding (possible with dilation) has index -1 and sends no
gradient, where PyTorch returns an index outside the window. The backward is deterministic on every
backend (PyTorch's CUDA kernels for ``max_pool3d`` and the adaptive pools add with atomics);
under ``"uniform"`` an entry that overlapping windows reach sums the windows that select it
alone, then the shares of the tied windows, each group in increasing window order.

Speed on CPU: ``"last"`` and ``"uniform"`` run in a small C kernel (:mod:`mtlib.maxpool._cpu`,
compiled once per machine by its C compiler in about a second and cached in
``~/.cache/mtlib``): one pass over each window's taps as in PyTorch's own kernel, two
vectorized passes over long rows (global and adaptive pools), and the whole backward. A strided
pool of at most 27 taps per window on at least ``2**18`` entries instead runs its forward as
one loop compiled by ``torch.compile`` (Inductor; :mod:`mtlib.maxpool._compiled`), which
vectorizes across windows: the first call on a new shape, dtype and geometry compiles (about
1 to 10 s; Inductor caches it on disk). ``MTLIB_POOL_COMPILE=0`` in the environment turns both
off (the eager path: same values, slower).

Chapter: maxpool, pools_practice.
"""

from __future__ import annotations

import importlib.resources

import torch

from mtlib.maxpool._args import adaptive_args, pool_args
from mtlib.maxpool._dispatch import pool as _pool

_ARGS_DOC = """
    Args:
        input: ``(N, C, {dims})`` or ``(C, {dims})`` tensor, float16/bfloat16/float32/float64.
        kernel_size, stride, padding, dilation, ceil_mode, return_indices: as in
            ``torch.nn.functional.{torch_fn}`` (``stride`` defaults to ``kernel_size``;
            ``padding``, at most half the kernel, adds positions that are never selected;
            ``return_indices`` gives the flat index of the entry that receives each output's
            gradient, -1 for a window lying entirely in the padding).
        ties: ``"first"`` (PyTorch's gradient), ``"last"`` or ``"uniform"`` (eq 20 per window).
        backend: ``"auto"`` (PyTorch's own kernel for ``"first"``; Triton on CUDA when
            installed, else the vectorized PyTorch path), ``"torch"`` or ``"triton"``.

    Returns:
        The pooled tensor, and with ``return_indices`` the ``int64`` indices.

    Raises:
        TypeError: ``input`` is not a floating tensor, or a size argument is not an int/tuple.
        ValueError: wrong rank, ``kernel_size``/``stride``/``dilation`` <= 0, ``padding`` < 0 or
            above half the kernel, an output size <= 0, unknown ``ties`` or ``backend``,
            ``return_indices`` with ``ties="uniform"``.

    References:
        Despres (2024), Sec 4.3 (eqs 17-20) and Sec 4.4; book chapter ``maxpool``.
"""


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False, *, ties="first", backend="auto"):
    """2-d max pooling with a tie rule for the gradient (Sec 4.3, eq 20; Sec 4.4).

    Values equal ``torch.nn.functional.max_pool2d`` (as numbers: where ``+0`` and ``-0`` tie
    for a max, the PyTorch backend may return the other zero). For window ``w`` with tie set
    ``T_w`` the gradient is

    .. math::

        \\frac{\\partial L}{\\partial x_p} = \\sum_{w \\ni p} g_w \\, \\omega_w(p), \\qquad
        \\omega_w(p) = \\frac{[p \\in T_w]}{|T_w|} \\ (\\text{uniform}),

    or ``omega_w`` one-hot on the first / last entry of ``T_w`` in row-major window order.
    The forward saves the window max and an integer tie count (or selected tap) per output;
    the backward is deterministic (no atomics).
    {args}
    Examples:
        >>> x = torch.zeros(1, 2, 2, requires_grad=True)
        >>> max_pool2d(x, 2, ties="uniform").backward()
        >>> x.grad.tolist()
        [[[0.25, 0.25], [0.25, 0.25]]]
    """
    args = pool_args("max_pool2d", 2, kernel_size, stride, padding, dilation, ceil_mode,
                      return_indices, ties, backend)
    return _pool("max_pool2d", 2, input, args, return_indices)


def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False, *, ties="first", backend="auto"):
    """1-d max pooling with a tie rule for the gradient (Sec 4.3, eq 20; Sec 4.4).

    The 1-d case of :func:`max_pool2d`. With it the paper's Sec 4.4 example
    ``f(t) = maxpool1d(t, 4t) - maxpool1d(4t, t)`` (window 2, stride 1) has ``f'(0) = -3``
    under PyTorch's rule and the true ``0`` under ``"uniform"``: ``(1/2, 1/2) . (1, 4) -
    (1/2, 1/2) . (4, 1) = 0``.
    {args}
    Examples:
        >>> t = torch.zeros(1, requires_grad=True)
        >>> def f(ties):
        ...     a = max_pool1d(torch.cat([t, 4 * t]).view(1, 2), 2, 1, ties=ties)
        ...     return (a - max_pool1d(torch.cat([4 * t, t]).view(1, 2), 2, 1, ties=ties)).sum()
        >>> [torch.autograd.grad(f(rule), t)[0].item() for rule in ("first", "uniform")]
        [-3.0, 0.0]
    """
    args = pool_args("max_pool1d", 1, kernel_size, stride, padding, dilation, ceil_mode,
                      return_indices, ties, backend)
    return _pool("max_pool1d", 1, input, args, return_indices)


def max_pool3d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False, *, ties="first", backend="auto"):
    """3-d max pooling (volumes, videos) with a tie rule for the gradient (Sec 4.3, eq 20).

    The 3-d case of :func:`max_pool2d`: windows scanned in row-major (depth, height, width)
    order, ``"first"`` PyTorch's gradient, ``"last"`` its mirror, ``"uniform"`` eq 20 per
    window; the backward gathers per input position (deterministic, unlike PyTorch's CUDA
    ``max_pool3d`` backward, which adds with atomics).
    {args}
    Examples:
        >>> x = torch.zeros(1, 2, 2, 2, requires_grad=True)
        >>> max_pool3d(x, 2, ties="uniform").backward()
        >>> x.grad.flatten().tolist()
        [0.125, 0.125, 0.125, 0.125, 0.125, 0.125, 0.125, 0.125]
    """
    args = pool_args("max_pool3d", 3, kernel_size, stride, padding, dilation, ceil_mode,
                      return_indices, ties, backend)
    return _pool("max_pool3d", 3, input, args, return_indices)


for _fn, _dims in ((max_pool1d, "L"), (max_pool2d, "H, W"), (max_pool3d, "D, H, W")):
    _fn.__doc__ = _fn.__doc__.replace(
        "{args}", _ARGS_DOC.format(dims=_dims, torch_fn=_fn.__name__))


def _adaptive_pool(n: int, input, output_size, return_indices, ties, backend, counts_only=False):
    fn = f"adaptive_max_pool{n}d"
    args = adaptive_args(fn, n, output_size, return_indices, ties, backend)
    return _pool(fn, n, input, args, return_indices, counts_only, adaptive=True)


def adaptive_max_pool1d(input, output_size, return_indices=False, *, ties="first",
                        backend="auto"):
    """1-d adaptive max pooling with a tie rule for the gradient: see :func:`adaptive_max_pool2d`.

    Examples:
        >>> x = torch.tensor([[1.0, 1.0, 0.0, 1.0, 1.0]], requires_grad=True)
        >>> adaptive_max_pool1d(x, 2, ties="uniform").sum().backward()   # windows [0,3), [2,5)
        >>> x.grad.tolist()
        [[0.5, 0.5, 0.0, 0.5, 0.5]]
    """
    return _adaptive_pool(1, input, output_size, return_indices, ties, backend)


def adaptive_max_pool2d(input, output_size, return_indices=False, *, ties="first",
                        backend="auto"):
    """Adaptive max pooling with a tie rule for the gradient (Sec 4.3, eq 20).

    Output ``o`` of ``out`` along an axis of length ``L`` is the max over PyTorch's window
    ``[floor(o L / out), ceil((o + 1) L / out))`` (neighbouring windows overlap when ``out``
    does not divide ``L``). Values equal ``torch.nn.functional.adaptive_max_pool{1,2,3}d``,
    ``"first"`` gives PyTorch's gradient, ``"last"`` its mirror, ``"uniform"`` eq 20 per window
    (overlaps add up); the backward gathers per input position, so it is deterministic (PyTorch's
    CUDA backward adds with atomics).

    Args:
        input: ``(N, C, *spatial)`` or ``(C, *spatial)``, float16/bfloat16/float32/float64.
        output_size: an int or one int (or ``None``: the input size) per spatial axis.
        return_indices, ties, backend: as in :func:`max_pool2d`.

    Returns:
        The pooled tensor, and with ``return_indices`` the ``int64`` flat indices.

    Raises:
        TypeError: ``input`` is not a floating tensor, ``output_size`` not ints.
        ValueError: wrong rank, ``output_size`` <= 0, unknown ``ties``/``backend``,
            ``return_indices`` with ``ties="uniform"``.

    Examples:
        >>> x = torch.zeros(1, 3, 3, requires_grad=True)
        >>> adaptive_max_pool2d(x, 2, ties="uniform").sum().backward()
        >>> x.grad.tolist()
        [[[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]]]

    References:
        Despres (2024), Sec 4.3 (eqs 17-20); book chapter ``maxpool``.
    """
    return _adaptive_pool(2, input, output_size, return_indices, ties, backend)


def adaptive_max_pool3d(input, output_size, return_indices=False, *, ties="first",
                        backend="auto"):
    """3-d adaptive max pooling with a tie rule for the gradient: see
    :func:`adaptive_max_pool2d`.

    Examples:
        >>> x = torch.zeros(1, 2, 2, 2, requires_grad=True)
        >>> adaptive_max_pool3d(x, 1, ties="uniform").backward()
        >>> x.grad.sum().item()
        1.0
    """
    return _adaptive_pool(3, input, output_size, return_indices, ties, backend)


def window_tie_counts(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                      *, backend="auto") -> torch.Tensor:
    """Number of entries equal to the max in each 2-d pooling window: ``|T_w|`` of eq 20.

    A count above 1 marks a window where the tie rule matters (the max is not differentiable
    there). Padding is never counted; a window lying entirely in the padding counts 0. For a
    1-d pool pass ``input.unsqueeze(-2)`` and ``kernel_size=(1, k)``.

    Args:
        input, kernel_size, stride, padding, dilation, ceil_mode, backend: as in
            :func:`max_pool2d`.

    Returns:
        ``int32`` tensor of the pooled shape (no gradient).

    Raises:
        TypeError, ValueError: as :func:`max_pool2d`.

    Examples:
        >>> window_tie_counts(torch.tensor([[[1.0, 1.0, 0.0, 2.0]]]), (1, 2)).tolist()
        [[[2, 1]]]

    References:
        Despres (2024), Sec 4.3, eq 20; book chapter ``training`` (tie statistics).
    """
    args = pool_args("window_tie_counts", 2, kernel_size, stride, padding, dilation, ceil_mode,
                      False, "uniform", backend)
    with torch.no_grad():
        return _pool("window_tie_counts", 2, input, args, False, counts_only=True)


def window_tie_counts3d(input, kernel_size, stride=None, padding=0, dilation=1,
                        ceil_mode=False, *, backend="auto") -> torch.Tensor:
    """:func:`window_tie_counts` for the windows of :func:`max_pool3d` (``int32``, no gradient).

    Examples:
        >>> window_tie_counts3d(torch.zeros(1, 2, 2, 3), 2).tolist()
        [[[[8]]]]
    """
    args = pool_args("window_tie_counts3d", 3, kernel_size, stride, padding, dilation,
                      ceil_mode, False, "uniform", backend)
    with torch.no_grad():
        return _pool("window_tie_counts3d", 3, input, args, False, counts_only=True)


def adaptive_tie_counts(input, output_size, *, backend="auto") -> torch.Tensor:
    """``|T_w|`` for the windows of :func:`adaptive_max_pool1d`/``2d``/``3d`` (by the number
    of entries of ``output_size``; an int means 2-d), ``int32``, no gradient.

    Examples:
        >>> adaptive_tie_counts(torch.tensor([[[1.0, 1.0, 0.0, 1.0, 1.0]]]), (2,)).tolist()
        [[[2, 2]]]
    """
    n = len(output_size) if isinstance(output_size, (tuple, list)) else 2
    with torch.no_grad():
        return _adaptive_pool(n, input, output_size, False, "uniform", backend, counts_only=True)


def benchmark_results():
    """The CPU benchmark table of ``benchmarks/maxpool.py`` shipped with the package (a
    ``pandas.DataFrame``: one row per case, dtype, input kind, implementation and CPU setting,
    with the CPU model, ATen capability and thread count it was measured with).

    Examples:
        >>> {"native", "uniform"} <= set(benchmark_results()["impl"])
        True

    References:
        Book chapter ``pools_practice`` (Cost: the benchmark); ``benchmarks/README.md``.
    """
    import pandas as pd  # the only pandas use here: keeps `import mtlib.maxpool` light

    with importlib.resources.files(__package__).joinpath("bench/maxpool_cpu.csv").open() as f:
        return pd.read_csv(f)


class _MaxPoolNd(torch.nn.Module):
    _fn = staticmethod(max_pool2d)
    _dims = 2

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False,
                 ceil_mode=False, *, ties="first", backend="auto"):
        super().__init__()
        name = type(self).__name__
        pool_args(name, self._dims, kernel_size, stride, padding, dilation, ceil_mode,
                   return_indices, ties, backend)
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.dilation, self.return_indices, self.ceil_mode = dilation, return_indices, ceil_mode
        self.ties, self.backend = ties, backend

    def forward(self, input):
        return self._fn(input, self.kernel_size, self.stride, self.padding, self.dilation,
                        self.ceil_mode, self.return_indices, ties=self.ties, backend=self.backend)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}, ties={self.ties!r}")


class MaxPool2d(_MaxPoolNd):
    """``torch.nn.MaxPool2d`` with ``ties`` (and ``backend``): see :func:`max_pool2d`.

    Examples:
        >>> pool = MaxPool2d(3, stride=2, padding=1, ties="uniform")
        >>> pool(torch.ones(1, 4, 4)).shape
        torch.Size([1, 2, 2])
    """


class MaxPool1d(_MaxPoolNd):
    """``torch.nn.MaxPool1d`` with ``ties`` (and ``backend``): see :func:`max_pool1d`.

    Examples:
        >>> pool = MaxPool1d(2, stride=1, ties="uniform")
        >>> x = torch.zeros(1, 2, requires_grad=True)
        >>> pool(x).sum().backward()
        >>> x.grad.tolist()
        [[0.5, 0.5]]
    """

    _fn = staticmethod(max_pool1d)
    _dims = 1


class MaxPool3d(_MaxPoolNd):
    """``torch.nn.MaxPool3d`` with ``ties`` (and ``backend``): see :func:`max_pool3d`.

    Examples:
        >>> MaxPool3d((1, 2, 2), ties="uniform")(torch.ones(1, 3, 4, 4)).shape
        torch.Size([1, 3, 2, 2])
    """

    _fn = staticmethod(max_pool3d)
    _dims = 3


class _AdaptiveMaxPoolNd(torch.nn.Module):
    _dims = 2

    def __init__(self, output_size, return_indices=False, *, ties="first", backend="auto"):
        super().__init__()
        adaptive_args(type(self).__name__, self._dims, output_size, return_indices, ties, backend)
        self.output_size, self.return_indices = output_size, return_indices
        self.ties, self.backend = ties, backend

    def forward(self, input):
        return _adaptive_pool(self._dims, input, self.output_size, self.return_indices, self.ties,
                         self.backend)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}, ties={self.ties!r}"


class AdaptiveMaxPool1d(_AdaptiveMaxPoolNd):
    """``torch.nn.AdaptiveMaxPool1d`` with ``ties``: see :func:`adaptive_max_pool1d`."""

    _dims = 1


class AdaptiveMaxPool2d(_AdaptiveMaxPoolNd):
    """``torch.nn.AdaptiveMaxPool2d`` with ``ties``: see :func:`adaptive_max_pool2d`.

    Examples:
        >>> AdaptiveMaxPool2d((2, None), ties="uniform")(torch.ones(1, 5, 3)).shape
        torch.Size([1, 2, 3])
    """


class AdaptiveMaxPool3d(_AdaptiveMaxPoolNd):
    """``torch.nn.AdaptiveMaxPool3d`` with ``ties``: see :func:`adaptive_max_pool3d`."""

    _dims = 3
