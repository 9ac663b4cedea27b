"""Triton kernels of the tie-aware max pool, run on CPU by Triton's interpreter.

The interpreter is switched on by ``TRITON_INTERPRET=1``, which must be set before ``triton`` is
imported, so the checks run in a child process: this file executed as a script. The child runs
groups of checks comparing ``backend="triton"`` with the PyTorch backend and with PyTorch, and
prints one JSON line with ``"ok"`` or the failure of each group; there is one test per group.
Also checked here: the kernels compile ahead of time for an H100 (no GPU needed), and mtlib
imports and pools on CPU when triton is not installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback

import pytest

# The interpreter run takes over a minute: outside the inner loop (make check), inside make test.
pytestmark = pytest.mark.slow

GROUPS = ("forward", "backward", "first_is_pytorch", "nan", "many_ties_16_bit",
          "empty_batch", "deterministic", "autograd", "opcheck")
# (pool, input shape, arguments): every geometry class (1-d, 2-d, 3-d; stride, padding,
# dilation, ceil mode, a window entirely in the padding; adaptive with overlapping windows,
# more outputs than inputs, global pooling)
CASES = [
    ("max_pool2d", (2, 3, 7, 8), (2, 2, 0, 1, False)),
    ("max_pool2d", (2, 2, 9, 9), (3, 2, 1, 1, False)),
    ("max_pool2d", (1, 2, 6, 7), (3, 1, 0, 1, False)),
    ("max_pool2d", (2, 2, 7, 6), ((3, 2), (2, 1), (1, 1), (1, 2), True)),
    ("max_pool2d", (1, 2, 5, 9), ((2, 3), (3, 2), (1, 0), (2, 1), True)),
    ("max_pool1d", (2, 3, 11), (3, 2, 1, 1, False)),
    ("max_pool1d", (1, 2, 10), (2, 3, 1, 1, True)),
    ("max_pool1d", (1, 1, 1), (2, 1, 1, 2, False)),  # a window entirely in the padding
    ("max_pool3d", (1, 2, 4, 5, 6), (3, 2, 1, 1, False)),
    ("max_pool3d", (2, 1, 5, 4, 5), ((2, 1, 3), (1, 2, 2), (1, 0, 1), (2, 1, 1), True)),
    ("adaptive_max_pool1d", (2, 2, 7), (3,)),
    ("adaptive_max_pool1d", (1, 2, 3), (5,)),
    ("adaptive_max_pool2d", (2, 2, 5, 7), ((3, 4),)),
    ("adaptive_max_pool2d", (1, 3, 4, 4), (1,)),
    ("adaptive_max_pool3d", (1, 2, 4, 5, 3), ((3, 2, 2),)),
]


@pytest.fixture(scope="module")
def report():
    proc = subprocess.run([sys.executable, __file__], env={**os.environ, "TRITON_INTERPRET": "1"},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("group", GROUPS)
def test_triton_kernels_under_the_interpreter(report, group):
    assert report[group] == "ok", report[group]


def test_mtlib_works_without_triton():
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch, mtlib\n"
        "from mtlib.maxpool import max_pool2d\n"
        "x = torch.zeros(1, 2, 2, requires_grad=True)\n"
        "max_pool2d(x, 2, ties='uniform').backward()\n"
        "assert x.grad.tolist() == [[[0.25, 0.25], [0.25, 0.25]]]\n"
        "assert 'mtlib.maxpool._triton' not in sys.modules\n"
        "try:\n"
        "    max_pool2d(x, 2, ties='uniform', backend='triton')\n"
        "except ImportError as e:\n"
        "    print(e)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "max_pool2d: backend='triton' needs the `triton` package" in proc.stdout


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="interpreter enabled")
@pytest.mark.parametrize("kernel", ["_forward_kernel", "_backward_kernel"])
@pytest.mark.parametrize("dtype, rule", [("fp32", 0), ("fp16", 1), ("bf16", 2), ("fp64", 2)])
def test_kernels_compile_for_an_h100_without_a_gpu(kernel, dtype, rule):
    """Ahead-of-time compilation to PTX and cubin for sm_90 (no device needed), with the options
    used at launch: catches what the interpreter does not check (types, lowering)."""
    import triton  # pinned in requirements.txt: a missing triton fails, it is not skipped
    import triton.language as tl
    from triton import compiler
    from triton.backends.compiler import GPUTarget

    target = GPUTarget("cuda", 90, 32)
    from mtlib.maxpool import _triton

    pointers = (["x_ptr", "out_ptr"] if kernel == "_forward_kernel"
                else ["g_ptr", "x_ptr", "m_ptr", "gx_ptr"])
    signature = {name: f"*{dtype}" for name in pointers}
    signature["aux_ptr"] = "*i32"
    signature.update({name: "i32" for name in ("total", "D", "H", "W", "OD", "OH", "OW", "SD",
                                                "SH", "SW", "PD", "PH", "PW", "DD", "DH", "DW")})
    constants = {"KD": 2, "KH": 3, "KW": 2, "ADAPTIVE": rule == 1, "RULE": rule, "BLOCK": 256,
                 "ACC": tl.float64 if dtype == "fp64" else tl.float32}
    if kernel == "_backward_kernel":
        constants.update({"RD": 2, "RH": 3, "RW": 2})
    signature.update({name: "constexpr" for name in constants})
    source = compiler.ASTSource(fn=getattr(_triton, kernel), signature=signature,
                                constexprs=constants)
    compiled = triton.compile(source, target=target, options=_triton.COMPILE_OPTIONS)
    assert compiled.asm["cubin"]
    if kernel == "_backward_kernel" and rule == 2:
        assert "div.rn.f" in compiled.asm["ptx"]  # IEEE division, as PyTorch's g / count


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="interpreter enabled")
def test_triton_ops_expose_their_kernels_to_torch_compile():
    """The Triton ops are ``triton_op``s launching through ``wrap_triton``: PyTorch finds both
    kernels inside them (the list Inductor reads to compile them with the graph). Compiling them
    needs a GPU: under the interpreter ``wrap_triton`` returns the plain interpreted kernel, which
    cannot run on fake tensors; the compiled path is tested on the PyTorch backend in
    test_maxpool_nd.py, and the ops' schema and autograd by opcheck in the child process."""
    from torch._library.triton import get_triton_kernels_for_op

    from mtlib.maxpool import _triton

    assert get_triton_kernels_for_op("mtlib::max_pool_ties_triton") == [_triton._forward_kernel]
    assert get_triton_kernels_for_op("mtlib::max_pool_ties_triton_backward") == [
        _triton._backward_kernel]


# --- the child process --------------------------------------------------------------------------

def _inputs(shape, dtype, seed):
    import torch

    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(-1, 2, shape, generator=gen).to(dtype)
    x.view(-1)[torch.randperm(x.numel(), generator=gen)[:1]] = float("nan")
    return x


def _pool(x, case, **kw):
    import mtlib.maxpool as mp

    name, args = case
    return getattr(mp, name)(x, *args, **kw)


def _native(x, case, **kw):
    import torch.nn.functional as F

    name, args = case
    return getattr(F, name)(x, *args, **kw)


def _grad(x, g, case, **kw):
    xg = x.clone().requires_grad_()
    y = _pool(xg, case, **kw)
    y.backward(g)
    return y.detach(), xg.grad


def _cases():
    import torch

    every = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
    for i, (name, shape, args) in enumerate(CASES):  # all dtypes on a few, to stay fast
        for dtype in every if i in (1, 8, 12) else (torch.bfloat16, torch.float64):
            yield _inputs(shape, dtype, i), (name, args)


def _counts(x, case, backend):
    import mtlib.maxpool as mp

    name, args = case
    if name.startswith("adaptive"):
        n = x.dim() - 2
        size = args[0] if isinstance(args[0], tuple) else (args[0],) * n
        return mp.adaptive_tie_counts(x, size, backend=backend)
    if name == "max_pool3d":
        return mp.window_tie_counts3d(x, *args, backend=backend)
    if name == "max_pool1d":  # a 1-d pool is a 2-d pool of height 1
        k, s, p, d, ceil_mode = args
        return mp.window_tie_counts(x.unsqueeze(2), (1, k), (1, s), (0, p), (1, d), ceil_mode,
                                    backend=backend)
    return mp.window_tie_counts(x, *args, backend=backend)


def _same(a, b):
    import torch

    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


def check_forward():
    import torch

    for x, case in _cases():
        native = _native(x, case)
        for ties in ("first", "last", "uniform"):
            out = _pool(x, case, ties=ties, backend="triton")
            _same(out, _pool(x, case, ties=ties, backend="torch"))
            _same(out, native)
            if ties != "uniform":
                idx = _pool(x, case, ties=ties, backend="triton", return_indices=True)[1]
                ref = _pool(x, case, ties=ties, backend="torch", return_indices=True)[1]
                assert torch.equal(idx, ref), (case, ties)
        counts = [_counts(x, case, b) for b in ("triton", "torch")]
        assert torch.equal(*counts), case


def check_backward():
    import torch

    for x, geometry in _cases():
        y = _pool(x, geometry)
        g = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(x.dtype)
        for ties in ("first", "last", "uniform"):
            tri = _grad(x, g, geometry, ties=ties, backend="triton")[1]
            ref = _grad(x, g, geometry, ties=ties, backend="torch")[1]
            if x.element_size() >= 4:
                assert torch.equal(tri, ref), (geometry, ties, x.dtype)
            else:  # float32 sums rounded once (Triton) vs rounded per add (PyTorch's CPU order)
                torch.testing.assert_close(tri, ref, rtol=2e-2, atol=2e-2)


def check_first_is_pytorch():
    import torch

    for x, geometry in _cases():
        if x.element_size() < 4 or x.numel() == 1:  # 16-bit sums; PyTorch's all-padding window
            continue
        xt = x.clone().requires_grad_()
        y = _native(xt, geometry)
        g = torch.randn(y.shape, dtype=x.dtype)
        y.backward(g)
        _same(_grad(x, g, geometry, ties="first", backend="triton")[1], xt.grad)


def check_nan():
    import torch

    x = torch.tensor([[[1.0, float("nan"), float("nan"), 0.0]]])
    for ties, expected in (("first", [0.0, 0.0, 1.0, 0.0]), ("last", [0.0, 1.0, 0.0, 0.0]),
                           ("uniform", [0.0, 0.5, 0.5, 0.0])):
        y, gx = _grad(x, torch.ones(1, 1, 1), ("max_pool1d", (4,)), ties=ties,
                      backend="triton")
        assert y.isnan().all() and gx[0, 0].tolist() == expected, (ties, gx)


def check_many_ties_16_bit():
    """Integer counts past float16's exact integers (2048) and bfloat16's (256), and the exact
    shares g / N they give (no float count is ever formed)."""
    import torch

    from mtlib.maxpool import _triton, window_tie_counts

    block = _triton._BLOCK
    _triton._BLOCK = 4096  # one program: the interpreter unrolls the n taps per program
    try:
        x = torch.full((1, 1, 1, 2049), 0.5, dtype=torch.float16)
        assert window_tie_counts(x, (1, 2049), backend="triton").item() == 2049
        for dtype, n in ((torch.float16, 300), (torch.bfloat16, 257)):
            x = torch.full((1, 1, n), 0.5, dtype=dtype)
            assert window_tie_counts(x.unsqueeze(2), (1, n), backend="triton").item() == n
            _, gx = _grad(x, torch.ones(1, 1, 1, dtype=dtype), ("max_pool1d", (n,)),
                          ties="uniform", backend="triton")
            assert torch.all(gx == (1.0 / torch.tensor(n, dtype=torch.float32)).to(dtype)), dtype
    finally:  # the later groups run with the launch block size of the library
        _triton._BLOCK = block


def check_empty_batch():
    import torch

    y, gx = _grad(torch.zeros(0, 2, 4, 4), torch.zeros(0, 2, 2, 2), ("max_pool2d", (2,)),
                  ties="uniform", backend="triton")
    assert y.shape == (0, 2, 2, 2) and gx.shape == (0, 2, 4, 4)


def check_deterministic():
    import torch

    x = _inputs((2, 4, 12, 12), torch.float32, 7)
    g = torch.randn(2, 4, 10, 10)
    grads = [_grad(x, g, ("max_pool2d", (3, 1)), ties="uniform", backend="triton")[1]
             for _ in range(2)]
    assert torch.equal(grads[0].view(torch.int32), grads[1].view(torch.int32))


def check_autograd():
    import torch

    x = _inputs((2, 5, 6), torch.float64, 8)

    def loss(x, backend):
        return (_pool(x, ("max_pool2d", (3, 2, 1)), ties="uniform", backend=backend) ** 2).nansum()

    _same(torch.func.grad(lambda x: loss(x, "triton"))(x),
          torch.func.grad(lambda x: loss(x, "torch"))(x))


def check_opcheck():
    """The triton_ops through opcheck (schema, fake kernel, autograd registration, AOT)."""
    import torch

    import mtlib.maxpool  # noqa: F401  (registers the ops)

    x = _inputs((1, 2, 3, 4, 5), torch.float32, 9).nan_to_num().requires_grad_()
    for params in (([2, 2, 2], [1, 2, 1], [1, 1, 0], [1, 1, 2], True, []),
                   ([1, 1, 1], [1, 1, 1], [0, 0, 0], [1, 1, 1], False, [2, 3, 2])):
        for ties in ("last", "uniform"):
            args = (*params, ties)
            # no test_faketensor here: under the interpreter wrap_triton would run the
            # interpreted kernel on fake (meta) storage; on CUDA the fake path launches nothing
            torch.library.opcheck(torch.ops.mtlib.max_pool_ties_triton.default, (x, *args),
                                  test_utils=("test_schema", "test_autograd_registration"))
            out, aux = torch.ops.mtlib.max_pool_ties_triton(x.detach(), *args)
            torch.library.opcheck(torch.ops.mtlib.max_pool_ties_triton_backward.default,
                                  (torch.randn_like(out), x.detach(), out, aux, *args),
                                  test_utils=("test_schema",))


def _child_report() -> dict:
    results = {}
    for group in GROUPS:
        try:
            globals()[f"check_{group}"]()
            results[group] = "ok"
        except Exception:  # report every failure to the parent test
            results[group] = traceback.format_exc()[-3000:]
    return results


if __name__ == "__main__":
    print(json.dumps(_child_report()))
