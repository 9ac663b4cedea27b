"""Forward + backward time of mtlib's tie-aware max pools as a ratio to PyTorch's, same run.

For each case (shape and window geometry: 1-d, 2-d, 3-d and adaptive pools), dtype and input
kind, every implementation runs ``y = pool(x); y.backward(g)`` ``--reps`` times, interleaved
with PyTorch's native ``max_pool{1,2,3}d`` / ``adaptive_max_pool{1,2,3}d`` so that machine load
hits all of them alike; the table reports the median time and its ratio to the native median.
Implementations: ``native`` (PyTorch), ``first``, ``last``, ``uniform`` (mtlib with
``ties=...``, backend ``auto``: PyTorch's own kernel for ``first``, Triton on CUDA, on CPU
mtlib's C kernel, or for strided windows of few taps on large inputs a forward compiled by
Inductor) and ``naive_uniform``, the equal split users write today (unfold into windows, tie
mask, weights mask / count; only for kernel = stride without padding). ``first_call_ms`` is
the first forward + backward on the case's shape, in a fresh Inductor cache and a fresh build
folder of the C kernel: for ``last``/``uniform`` on CPU it includes compiling (Inductor: once
per shape, dtype, geometry and rule; the C kernel: once, in the first case that runs it).
``GBps`` is the essential traffic (read x, write y, read g, write the input gradient) over the
median time: a lower bound of the achieved bandwidth; on CUDA ``peak_GBps`` is the device's
theoretical bandwidth (memory clock x bus width x 2), so ``GBps / peak_GBps`` is the fraction
reached (that path is untested: no GPU was available when it was written).

Each row records the machine: CPU model, ``torch.backends.cpu.get_cpu_capability()`` (the ATen
vector ISA), the thread count and the ``ATEN_CPU_CAPABILITY``/``MKL_ENABLE_INSTRUCTIONS``/
``ONEDNN_MAX_CPU_ISA`` settings, under ``setting`` (``--setting native`` or ``capped``).

Usage: ``python benchmarks/maxpool.py [--quick] [--large] [--threads 2] [--device cpu|cuda]
[--setting native] [--append] [--out DIR]``; writes the CPU table into the package,
``mtlib/maxpool/bench/maxpool_cpu.csv`` (its one home: ``mtlib.maxpool.benchmark_results()``
reads it), a GPU table to ``benchmarks/results/maxpool_cuda.csv`` and the plot to
``benchmarks/results/maxpool_<device>.png`` (``--out DIR``: both into DIR; ``--append`` adds
the rows to an existing CSV, e.g. a capped-ISA run after a native one).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import tempfile
import time

# A fresh Inductor cache, so that first_call_ms is the cost of compiling mtlib's CPU paths on a
# machine that never ran them (set before torch is imported; an explicit setting is kept)
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="mtlib-bench-inductor-"))
# and a fresh build of mtlib's C kernel (mtlib.maxpool._cpu): the first case's first call builds it
os.environ.setdefault("MTLIB_CACHE_DIR", tempfile.mkdtemp(prefix="mtlib-bench-cc-"))

import matplotlib
import pandas as pd
import torch
import torch.nn.functional as F

import mtlib.maxpool as mp
from mtlib.machine import cpu_model  # the one CPU-name helper (also in every sweep record)

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the non-interactive backend)

# name, input shape, geometry: (kernel, stride, padding) or ("adaptive", output_size)
CASES = [
    ("k3s2p1 (32,64,56,56)", (32, 64, 56, 56), (3, 2, 1)),
    ("k2s2 (64,128,28,28)", (64, 128, 28, 28), (2, 2, 0)),
    ("k3s1 (8,3,224,224)", (8, 3, 224, 224), (3, 1, 0)),
    ("k2s2 small map (128,512,4,4)", (128, 512, 4, 4), (2, 2, 0)),
    ("1d k3s2p1 (32,128,2048)", (32, 128, 2048), (3, 2, 1)),
    ("1d k2s2 (16,64,4096)", (16, 64, 4096), (2, 2, 0)),
    ("3d k2s2 video (8,32,16,56,56)", (8, 32, 16, 56, 56), (2, 2, 0)),
    ("3d k3s2p1 video (4,32,16,56,56)", (4, 32, 16, 56, 56), (3, 2, 1)),
    ("global k28 (32,256,28,28)", (32, 256, 28, 28), (28, 28, 0)),
    ("global k64 (8,16,64,64)", (8, 16, 64, 64), (64, 64, 0)),
    ("adaptive 2d ->(1,1) (64,512,7,7)", (64, 512, 7, 7), ("adaptive", (1, 1))),
    ("adaptive 2d ->(5,5) (32,128,13,13)", (32, 128, 13, 13), ("adaptive", (5, 5))),
    ("adaptive 2d ->(7,7) (32,512,14,14)", (32, 512, 14, 14), ("adaptive", (7, 7))),
    ("adaptive 2d ->(12,12) (32,64,28,28)", (32, 64, 28, 28), ("adaptive", (12, 12))),
    ("adaptive 1d ->100 (32,128,2048)", (32, 128, 2048), ("adaptive", (100,))),
    ("adaptive 1d ->64 (32,128,2048)", (32, 128, 2048), ("adaptive", (64,))),
    ("adaptive 3d ->(4,7,7) (8,32,16,28,28)", (8, 32, 16, 28, 28), ("adaptive", (4, 7, 7))),
    ("adaptive 3d ->(1,1,1) (8,64,8,14,14)", (8, 64, 8, 14, 14), ("adaptive", (1, 1, 1))),
]
LARGE_CASES = [  # inputs above 32 MB (float32): see benchmarks/README.md on allocation costs
    ("large k3s2p1 (32,64,112,112)", (32, 64, 112, 112), (3, 2, 1)),
    ("large 1d k4s4 (32,128,2048)", (32, 128, 2048), (4, 4, 0)),
]
RESULTS = pathlib.Path(__file__).parent / "results"  # the plots (and GPU tables)
# The CPU table's one home: inside the package, read by mtlib.maxpool.benchmark_results() (the
# chapter opened alone, e.g. on Colab, needs no repository)
PACKAGE_TABLE = pathlib.Path(mp.__file__).parent / "bench" / "maxpool_cpu.csv"
IMPLS = ("native", "first", "last", "uniform", "naive_uniform")
ISA_VARIABLES = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA")


def peak_bandwidth_gbps() -> float:
    """Theoretical memory bandwidth of the current CUDA device in GB/s (NaN if unknown)."""
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    clock_khz = getattr(props, "memory_clock_rate", None)
    bus_bits = getattr(props, "memory_bus_width", None)
    if not clock_khz or not bus_bits:
        return float("nan")
    return 2 * clock_khz * 1e3 * bus_bits / 8 / 1e9


def naive_uniform_pool(x: torch.Tensor, k: int) -> torch.Tensor:
    """The equal split among tied maxima as written by hand: kernel = stride, no padding."""
    windows = x
    for d in range(2, x.dim()):
        windows = windows.unfold(d, k, k)
    windows = windows.flatten(x.dim())
    mask = windows == windows.amax(-1, keepdim=True)
    return (windows * (mask / mask.sum(-1, keepdim=True))).sum(-1)


def implementations(dims: int, geometry):
    if geometry[0] == "adaptive":
        size = geometry[1]
        native = getattr(F, f"adaptive_max_pool{dims}d")
        pool = getattr(mp, f"adaptive_max_pool{dims}d")
        impls = {"native": lambda x: native(x, size)}
        for ties in ("first", "last", "uniform"):
            impls[ties] = lambda x, ties=ties: pool(x, size, ties=ties)
        return impls
    kernel, stride, padding = geometry
    native = getattr(F, f"max_pool{dims}d")
    pool = getattr(mp, f"max_pool{dims}d")
    impls = {"native": lambda x: native(x, kernel, stride, padding)}
    for ties in ("first", "last", "uniform"):
        impls[ties] = lambda x, ties=ties: pool(x, kernel, stride, padding, ties=ties)
    if kernel == stride and padding == 0:
        impls["naive_uniform"] = lambda x: naive_uniform_pool(x, kernel)
    return impls


def time_fwd_bwd(impls: dict, x: torch.Tensor, g: torch.Tensor, reps: int, sync) -> dict:
    """Median seconds of forward + backward per implementation, runs interleaved, and the
    seconds of each one's first call (which compiles where mtlib compiles its CPU path)."""
    xg = x.clone().requires_grad_()

    def run(fn):
        xg.grad = None
        sync()
        start = time.perf_counter()
        fn(xg).backward(g)
        sync()
        return time.perf_counter() - start

    first = {name: run(fn) for name, fn in impls.items()}  # incl. compiling, on a new shape
    for fn in impls.values():
        run(fn)
    times = {name: [] for name in impls}
    for _ in range(reps):
        for name, fn in impls.items():
            times[name].append(run(fn))
    return {name: statistics.median(ts) for name, ts in times.items()}, first


def make_input(shape, dtype, kind: str, device: str, gen: torch.Generator) -> torch.Tensor:
    x = torch.randn(shape, generator=gen).to(device=device, dtype=dtype)
    return x.relu() if kind == "relu" else x


def machine(args) -> dict:
    """What the rows were measured on: the ratios depend on the CPU and its settings."""
    on_cuda = args.device == "cuda"
    return dict(
        device=args.device,
        device_name=torch.cuda.get_device_name() if on_cuda else cpu_model(),
        aten_capability=torch.backends.cpu.get_cpu_capability(),
        threads=torch.get_num_threads(), setting=args.setting,
        isa_env=" ".join(f"{v}={os.environ[v]}" for v in ISA_VARIABLES if v in os.environ),
        torch=torch.__version__,
        peak_GBps=round(peak_bandwidth_gbps(), 1) if on_cuda else float("nan"))


def run_benchmarks(args) -> pd.DataFrame:
    device = args.device
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    info = machine(args)
    gen = torch.Generator().manual_seed(0)
    rows = []
    for case, shape, geometry in CASES + (LARGE_CASES if args.large else []):
        if args.cases and not any(key in case for key in args.cases):
            continue
        dims = len(shape) - 2
        impls = implementations(dims, geometry)
        for dtype in args.dtypes:
            for kind in args.inputs:
                x = make_input(shape, dtype, kind, device, gen)
                with torch.no_grad():
                    y = impls["native"](x)
                g = torch.randn(y.shape, generator=gen).to(device=device, dtype=dtype)
                medians, first = time_fwd_bwd(impls, x, g, args.reps, sync)
                traffic = x.element_size() * 2 * (x.numel() + y.numel())
                for impl, seconds in medians.items():
                    rows.append(dict(
                        **info, case=case, dims=dims, shape=str(shape),
                        geometry=str(geometry), dtype=str(dtype).removeprefix("torch."),
                        input=kind, impl=impl, median_ms=round(seconds * 1e3, 4),
                        first_call_ms=round(first[impl] * 1e3, 1),
                        ratio_to_native=round(seconds / medians["native"], 3),
                        GBps=round(traffic / seconds / 1e9, 2)))
                print(f"{case:38s} {rows[-1]['dtype']:9s} {kind:6s} " + "  ".join(
                    f"{impl} {medians[impl] / medians['native']:.2f}" for impl in medians),
                    flush=True)
    return pd.DataFrame(rows)


def plot(df: pd.DataFrame, path: pathlib.Path) -> None:
    inputs, dtypes = sorted(df.input.unique()), list(dict.fromkeys(df.dtype))
    fig, axes = plt.subplots(len(inputs), len(dtypes), figsize=(5.5 * len(dtypes),
                             4.2 * len(inputs)), squeeze=False, sharey=True)
    cases = list(dict.fromkeys(df.case))
    impls = [i for i in IMPLS if i != "native"]
    width = 0.8 / len(impls)
    for r, kind in enumerate(inputs):
        for c, dtype in enumerate(dtypes):
            ax = axes[r][c]
            sub = df[(df.input == kind) & (df.dtype == dtype)]
            for k, impl in enumerate(impls):
                ratios = [sub[(sub.case == case) & (sub.impl == impl)].ratio_to_native
                          for case in cases]
                ax.bar([i + (k - len(impls) / 2 + 0.5) * width for i in range(len(cases))],
                       [v.iloc[0] if len(v) else float("nan") for v in ratios], width,
                       label=impl)
            ax.axhline(1.0, color="black", lw=0.8)
            ax.axhline(1.5, color="red", lw=0.8, ls="--", label="1.5x target (CPU)")
            ax.set_xticks(range(len(cases)), [case.split(" (")[0] for case in cases],
                          rotation=30, ha="right", fontsize=8)
            ax.set_title(f"{dtype}, {kind} input")
            ax.set_ylabel("forward+backward time / PyTorch native")
    axes[0][0].legend(fontsize=8)
    device = df.device_name.iloc[0]
    fig.suptitle(f"mtlib max pool vs PyTorch native ({device}, ATen "
                 f"{df.aten_capability.iloc[0]}, {df.threads.iloc[0]} threads, median of "
                 "repeated runs)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs, dtypes and inputs")
    parser.add_argument("--large", action="store_true", help="add inputs above 32 MB")
    parser.add_argument("--dtypes", default=None,
                        help="comma-separated, e.g. float32,bfloat16 (default: all three)")
    parser.add_argument("--reps", type=int, default=None, help="timed runs per implementation")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 2)),
                        help="CPU threads (torch; default OMP_NUM_THREADS, else 2)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=pathlib.Path, default=None,
                        help="folder for the CSV and plot (default: the CPU table in the "
                        "package, the plot and a GPU table in benchmarks/results)")
    parser.add_argument("--setting", default="native",
                        help="label of the CPU settings (native, capped), stored in the CSV")
    parser.add_argument("--cases", default=None,
                        help="comma-separated substrings: only the cases whose name has one")
    parser.add_argument("--append", action="store_true", help="add rows to an existing CSV")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.reps = args.reps or (5 if args.quick else 21)
    names = args.dtypes or ("float32,bfloat16" if args.quick else "float32,bfloat16,float16")
    args.dtypes = [getattr(torch, name) for name in names.split(",")]
    args.inputs = ["randn"] if args.quick else ["randn", "relu"]
    args.cases = args.cases.split(",") if args.cases else None
    df = run_benchmarks(args)
    folder = args.out or RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    plot_path = folder / f"maxpool_{args.device}.png"
    csv_path = (PACKAGE_TABLE if args.out is None and args.device == "cpu"
                else folder / f"maxpool_{args.device}.csv")
    if args.append and csv_path.exists():
        df = pd.concat([pd.read_csv(csv_path), df], ignore_index=True)
    df.to_csv(csv_path, index=False)
    plot(df[df.setting == df.setting.iloc[0]], plot_path)
    table = df.pivot_table(index=["setting", "case", "dtype", "input"], columns="impl",
                           values="ratio_to_native", sort=False)
    print(table[[i for i in IMPLS if i in table.columns]].to_string())
    print(f"wrote {csv_path} and {plot_path}")


if __name__ == "__main__":
    main()
