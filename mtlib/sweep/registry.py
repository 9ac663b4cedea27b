"""The book's named parameter sweeps and the command line that runs them.

``python -m mtlib.sweep NAME [--jobs N] [--out DIR] [--csv FILE]`` (or ``make sweep NAME=...``)
runs :data:`SWEEPS` ``[NAME]`` with :func:`mtlib.sweep.run_sweep`: the executed notebooks and
``results.csv`` go to ``DIR`` (default ``_build/sweeps/NAME``), and ``--csv`` writes a copy of
the table elsewhere (the book keeps one in ``book/data/sweep_NAME.csv``).

Chapter: sweeps (and ``make sweep NAME=...`` for boustany, stampacchia, training).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mtlib.sweep import RESULTS_CSV, run_sweep

_REPO = Path(__file__).resolve().parents[2]  # the checkout: mtlib/sweep/registry.py


@dataclass(frozen=True)
class Sweep:
    """A named sweep: a notebook of the book (path from the repository root) and its grid."""

    notebook: str
    grid: object
    description: str


_BOUSTANY_X = [
    [1.0, 2.0, 3.0, 4.0],
    [4.0, 3.0, 2.0, 1.0],
    [5.0, -2.0],
    [0.5, -1.0, 2.0],
    [3.0, 3.0, 1.0, 0.0, 2.0],
    [-0.7, 1.3, 0.2, 2.9, -1.1, 0.4, 1.7],
]

# The chapter's protocol depends on the batch size only; its training part (one seed here) keeps
# the learning rate proportional to the batch size, as at batch size 8 with lr 0.05 SGD is
# unstable and even float64 runs with the two tie rules end far apart.
_TRAINING_BATCH_SIZES = [8, 32, 128]

SWEEPS = {
    "boustany": Sweep(
        "book/boustany.ipynb",
        {"x_values": _BOUSTANY_X, "second_max": ["torch", "uniform", "first", "last"]},
        "Boustany's f'(0) (Sec 4.3) for several x and tie rules of the second max",
    ),
    "stampacchia": Sweep(
        "book/stampacchia.ipynb",
        {"w_name": ["flat", "flat_crossing", "relu"], "eps": [1e-2, 1e-4, 1e-6, 1e-8, 1e-10]},
        "the appendix integrals (eqs 23-24) over eps for three Lipschitz w",
    ),
    "training": Sweep(
        "book/training.ipynb",
        [{"batch_size": size, "lr": 0.05 * size / 32, "seeds": [0]} for size in _TRAINING_BATCH_SIZES],
        "Boustany's gradient-disagreement protocol (Sec 5) over batch sizes, four precisions",
    ),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m mtlib.sweep NAME [--jobs N] [--out DIR] [--csv FILE]``.

    Prints a one-line summary and the error of each failed point.

    Returns:
        The exit status: 0 when every point ran, 1 when some failed.
    """
    parser = argparse.ArgumentParser(prog="python -m mtlib.sweep", description="Run a named papermill sweep.")
    parser.add_argument("name", choices=sorted(SWEEPS), help="which sweep to run")
    parser.add_argument("--jobs", type=int, default=max(1, min(4, os.cpu_count() or 1)),
                        help="worker processes")
    parser.add_argument("--out", default=None, help="output folder (default _build/sweeps/NAME)")
    parser.add_argument("--csv", default=None, help="also write the results table to this file")
    args = parser.parse_args(argv)
    sweep = SWEEPS[args.name]
    out = Path(args.out or Path("_build") / "sweeps" / args.name)
    notebook = _REPO / sweep.notebook
    if not notebook.is_file():  # mtlib installed outside a checkout: run from the repository root
        notebook = Path(sweep.notebook)
    start = time.perf_counter()
    table = run_sweep(notebook, sweep.grid, out, jobs=args.jobs)
    if args.csv:
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.csv, index=False)
    failed = table[table["status"] == "failed"]
    print(f"{args.name}: {len(table)} runs, {len(failed)} failed, {time.perf_counter() - start:.1f} s; "
          f"results in {out / RESULTS_CSV}")
    for _, row in failed.iterrows():
        print(f"  run {row['run']} failed: {row['error']}")
    return 1 if len(failed) else 0
