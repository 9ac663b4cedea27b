"""Time of ``mtlib.perturbed_gradient`` as a ratio to PyTorch's forward + backward, same run.

Both compute the gradient of a cross-entropy loss with respect to every parameter of a network:
``autograd`` runs the forward pass and ``torch.autograd.grad`` (PyTorch's tie rules at kinks);
``perturbed`` runs :func:`mtlib.perturbed_gradient` on ``dict(model.named_parameters())``
(a Gaussian direction drawn in every call, one forward pass carrying it as a tangent, one reverse
pass; an element of Clarke's generalized gradient with probability one). Models, float32,
PyTorch's default initialisation, Gaussian inputs, one CPU thread:

* ``MLP``: ``784 -> h -> h -> 10`` with ReLU, ``h`` in 12, 110, 700 (10k, 100k, 1M parameters),
  batch 128;
* ``CNN``: conv 3x3 (``c`` channels), ReLU, max pool 2, conv 3x3 (``2c``), ReLU, max pool 2,
  linear, on ``1 x 28 x 28`` images, ``c`` in 8, 40, 200 (9k, 68k, 918k parameters), batch 32.

Against :func:`mtlib.lexicographic_gradient`, which carries one tangent per input: the same loss
of a small MLP ``d -> 8 -> 8 -> 10`` (batch 16) as a function of its flattened parameters, for
``n`` = 194 to 4258 parameters; its time grows with ``n``, the perturbed gradient's does not.

Each implementation runs ``--reps`` times, interleaved, so that load on the machine hits both
alike. The table reports medians of the thread's CPU time (``time.thread_time``: what this
computation used, whatever the other processes on a shared machine do) and of the wall time, and
their ratios to autograd. Goal for the perturbed gradient: at most 2x autograd; bar: 3x.

Usage: ``python benchmarks/perturbed.py [--quick] [--reps 11] [--threads 1]``; writes
``benchmarks/results/perturbed_cpu.csv`` and prints the tables with the CPU named.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import time

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from mtlib import lexicographic_gradient, perturbed_gradient
from mtlib.machine import cpu_model  # the one CPU-name helper (also in every sweep record)

MLP_WIDTHS = (12, 110, 700)
CNN_CHANNELS = (8, 40, 200)
LEX_INPUTS = (4, 32, 128, 512)  # 8 d + 162 parameters: 194 to 4258


def mlp(d: int, h: int, out: int = 10) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(d, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(),
                         nn.Linear(h, out))


def cnn(c: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(c, 2 * c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(2 * c * 7 * 7, 10))


def case(name: str, size: int, seed: int = 0):
    """``(model, params, loss)``: ``loss(params)`` is the cross-entropy on one fixed minibatch."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model, batch = (mlp(784, size), 128) if name == "MLP" else (cnn(size), 32)
    x = torch.randn(batch, 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (batch,), generator=gen)
    params = dict(model.named_parameters())
    return model, params, lambda p: F.cross_entropy(functional_call(model, p, (x,)), y)


def timed(fn) -> tuple[float, float]:
    """(CPU seconds of this thread, wall seconds) of one call."""
    cpu, wall = time.thread_time(), time.perf_counter()
    fn()
    return time.thread_time() - cpu, time.perf_counter() - wall


def race(impls: dict, reps: int) -> dict:
    for fn in impls.values():  # warm-up
        fn()
    times = {name: [] for name in impls}
    for _ in range(reps):  # interleaved: load on the machine hits every implementation alike
        for name, fn in impls.items():
            times[name].append(timed(fn))
    return times


def rows_of(times: dict, base: str, **key) -> list[dict]:
    med = {name: (statistics.median(c for c, _ in ts), statistics.median(w for _, w in ts))
           for name, ts in times.items()}
    return [{**key, "impl": name, "cpu_ms": 1e3 * med[name][0], "wall_ms": 1e3 * med[name][1],
             "ratio_cpu": med[name][0] / med[base][0], "ratio_wall": med[name][1] / med[base][1],
             "reps": len(times[name])} for name in times]


def run_networks(reps: int, models=("MLP", "CNN")) -> pd.DataFrame:
    rows = []
    for name in models:
        for size in (MLP_WIDTHS if name == "MLP" else CNN_CHANNELS):
            model, params, loss = case(name, size)
            values = list(params.values())
            gen = torch.Generator().manual_seed(1)
            impls = {"autograd": lambda loss=loss, params=params, values=values:
                     torch.autograd.grad(loss(params), values),
                     "perturbed": lambda loss=loss, params=params, gen=gen:
                     perturbed_gradient(loss, params, generator=gen)}
            want = dict(zip(params, impls["autograd"]()))
            got = impls["perturbed"]()
            for key in params:  # no tie is met at these points: both are the gradient
                torch.testing.assert_close(got[key], want[key], rtol=1e-3, atol=1e-6)
            n = sum(p.numel() for p in values)
            rows += rows_of(race(impls, reps), "autograd", model=name, size=size, parameters=n)
    return pd.DataFrame(rows)


def run_lexicographic(reps: int) -> pd.DataFrame:
    rows = []
    for d in LEX_INPUTS:
        torch.manual_seed(0)
        model = mlp(d, 8)
        gen = torch.Generator().manual_seed(0)
        x, y = torch.randn(16, d, generator=gen), torch.randint(0, 10, (16,), generator=gen)
        names = [k for k, _ in model.named_parameters()]
        shapes = [p.shape for _, p in model.named_parameters()]
        theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

        def loss(v, names=names, shapes=shapes, model=model, x=x, y=y):
            parts = v.split([s.numel() for s in shapes])
            params = {k: t.reshape(s) for k, t, s in zip(names, parts, shapes)}
            return F.cross_entropy(functional_call(model, params, (x,)), y)

        leaf = theta.clone().requires_grad_()
        impls = {"autograd": lambda loss=loss, leaf=leaf: torch.autograd.grad(loss(leaf), leaf),
                 "perturbed": lambda loss=loss, theta=theta: perturbed_gradient(loss, theta),
                 "lexicographic": lambda loss=loss, theta=theta: lexicographic_gradient(loss, theta)}
        torch.testing.assert_close(impls["lexicographic"](), impls["autograd"]()[0], rtol=1e-4, atol=1e-6)
        rows += rows_of(race(impls, reps), "autograd", model="MLP d-8-8-10", size=d, parameters=theta.numel())
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 repetitions")
    parser.add_argument("--reps", type=int, default=11)
    parser.add_argument("--threads", type=int, default=1)
    default = pathlib.Path(__file__).parent / "results" / "perturbed_cpu.csv"
    parser.add_argument("--out", default=str(default))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    reps = 5 if args.quick else args.reps
    cpu, capability = cpu_model(), torch.backends.cpu.get_cpu_capability()
    print(f"CPU: {cpu}; ATen capability {capability}; {torch.get_num_threads()} thread(s); "
          f"torch {torch.__version__}; {reps} interleaved repetitions")
    start = time.perf_counter()
    df = pd.concat([run_networks(reps), run_lexicographic(reps)], ignore_index=True)
    df["cpu"], df["capability"], df["threads"] = cpu, capability, torch.get_num_threads()
    df["torch"] = torch.__version__
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    df.round(4).to_csv(args.out, index=False)
    view = df.pivot_table(index=["model", "parameters"], columns="impl",
                          values=["cpu_ms", "ratio_cpu", "ratio_wall"], sort=False)
    print("\nmedian CPU ms, and ratios to autograd (CPU time; wall time):")
    print(view.round(2).to_string())
    print(f"\n{time.perf_counter() - start:.0f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
