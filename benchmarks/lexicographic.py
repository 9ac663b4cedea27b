"""Time of ``mtlib.lexicographic_gradient`` as a ratio to ``torch.func.jacfwd``, same run.

Both compute a full gradient in forward mode with ``n`` tangents (``n`` = number of inputs):
``jacfwd`` vmaps PyTorch's forward-mode AD over the ``n`` columns of the identity;
``lexicographic_gradient(f, x)`` runs ``f`` once on a ``Dual`` carrying the ``n`` columns and
resolves every kink lexicographically (chapter ``lexicographic``). Models: an MLP
``n -> 64 -> 64 -> 1`` (ReLU) and a small CNN on an ``s x s`` image (``n = s^2``: conv 3x3 to
8 channels, ReLU, max pool 2, conv 3x3, ReLU, linear), float64, for ``n`` in 4, 16, 64, 256.
Points: ``smooth`` (Gaussian weights and input: no tie) and ``kinks`` (integer weights and
input: ties in ReLUs and pools, where the lexicographic rules do extra work). Each
implementation runs ``--reps`` times, interleaved, and the table reports median times and the
ratio lexicographic / jacfwd (also of the fastest repetitions, which load disturbs least);
``growth`` is the median time at ``n`` over the median time at ``n = 16``.

Usage: ``python benchmarks/lexicographic.py [--quick] [--threads 1] [--reps 15]``; writes
``benchmarks/results/lexicographic_cpu.csv`` and prints the table with the CPU named.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import time

import pandas as pd
import torch
import torch.nn as nn

from mtlib import lexicographic_gradient
from mtlib.machine import cpu_model  # the one CPU-name helper (also in every sweep record)

SIZES = (4, 16, 64, 256)


def mlp(n: int, gen: torch.Generator, integer: bool) -> nn.Module:
    return _fill(nn.Sequential(nn.Linear(n, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                               nn.Linear(64, 1)), gen, integer)


def cnn(n: int, gen: torch.Generator, integer: bool) -> nn.Module:
    s = int(round(n**0.5))
    return _fill(nn.Sequential(
        nn.Unflatten(0, (1, 1, s, s)), nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Flatten(0), nn.Linear(8 * (s // 2) ** 2, 1),
    ), gen, integer)


def _fill(model: nn.Module, gen: torch.Generator, integer: bool) -> nn.Module:
    model = model.double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randint(-2, 3, p.shape, generator=gen) if integer
                    else torch.randn(p.shape, generator=gen, dtype=p.dtype) / p.shape[-1] ** 0.5)
            p.requires_grad_(False)
    return model


def case(model_name: str, n: int, kind: str, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    integer = kind == "kinks"
    model = (mlp if model_name == "MLP" else cnn)(n, gen, integer)
    x = (torch.randint(-2, 3, (n,), generator=gen).double() if integer
         else torch.randn(n, generator=gen, dtype=torch.float64))
    return (lambda v: model(v).sum()), x


def timed(fn, reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def run(reps: int, sizes=SIZES, models=("MLP", "CNN"), kinds=("smooth", "kinks")) -> pd.DataFrame:
    rows = []
    for model_name in models:
        for kind in kinds:
            for n in sizes:
                f, x = case(model_name, n, kind)
                impls = {"lexicographic": lambda f=f, x=x: lexicographic_gradient(f, x),
                         "jacfwd": lambda f=f, x=x: torch.func.jacfwd(f)(x)}
                g_lex, g_fwd = impls["lexicographic"](), impls["jacfwd"]()  # warm-up
                if kind == "smooth":  # no kink: both are the gradient
                    torch.testing.assert_close(g_lex, g_fwd, rtol=1e-9, atol=1e-12)
                times = {name: [] for name in impls}
                for _ in range(reps):  # interleaved: load on the machine hits both alike
                    for name, fn in impls.items():
                        times[name] += timed(fn, 1)
                for name, ts in times.items():
                    rows.append({"model": model_name, "kind": kind, "n_inputs": n, "impl": name,
                                 "median_ms": 1e3 * statistics.median(ts), "min_ms": 1e3 * min(ts),
                                 "reps": reps})
    df = pd.DataFrame(rows)
    jac = df[df.impl == "jacfwd"].set_index(["model", "kind", "n_inputs"])
    keys = [(r.model, r.kind, r.n_inputs) for r in df.itertuples()]
    df["ratio_to_jacfwd"] = [m / jac.median_ms[key] for m, key in zip(df.median_ms, keys)]
    df["ratio_min"] = [m / jac.min_ms[key] for m, key in zip(df.min_ms, keys)]
    base = df[df.n_inputs == 16].set_index(["model", "kind", "impl"])["median_ms"]
    df["growth_vs_16"] = [r.median_ms / base[(r.model, r.kind, r.impl)] if (r.model, r.kind, r.impl) in base
                          else float("nan") for r in df.itertuples()]
    return df


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 repetitions")
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    default = pathlib.Path(__file__).parent / "results" / "lexicographic_cpu.csv"
    parser.add_argument("--out", default=str(default))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    reps = 5 if args.quick else args.reps
    cpu, capability = cpu_model(), torch.backends.cpu.get_cpu_capability()
    print(f"CPU: {cpu}; ATen capability {capability}; {torch.get_num_threads()} threads; "
          f"torch {torch.__version__}; {reps} interleaved repetitions")
    df = run(reps)
    df["cpu"], df["capability"], df["threads"] = cpu, capability, torch.get_num_threads()
    df["torch"] = torch.__version__
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    df.round(4).to_csv(args.out, index=False)
    lex = df[df.impl == "lexicographic"]
    table = lex.pivot_table(index=["model", "kind"], columns="n_inputs", values="ratio_to_jacfwd")
    print("\nlexicographic_gradient / jacfwd (median time ratio):")
    print(table.round(2).to_string())
    best = lex.pivot_table(index=["model", "kind"], columns="n_inputs", values="ratio_min")
    print("\nthe same with the fastest of the repetitions (less sensitive to load):")
    print(best.round(2).to_string())
    ms = df.pivot_table(index=["model", "kind", "impl"], columns="n_inputs", values="median_ms")
    print("\nmedian ms:")
    print(ms.round(2).to_string())
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
