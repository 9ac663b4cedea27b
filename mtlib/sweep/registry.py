"""The book's named parameter sweeps and the command line that runs them.

``python -m mtlib.sweep NAME`` (or ``make sweep NAME=... [DASK=tcp://host:8786]``) runs
:data:`SWEEPS` ``[NAME]``: with :func:`mtlib.sweep.run_sweep` (executed notebooks, their records
and ``results.csv`` in ``--out``, default ``_build/sweeps/NAME``; a rerun resumes) or, with
``--function``, its function form with :func:`mtlib.sweep.map_grid`. Where the points run:

* ``--scheduler ADDRESS``: an existing Dask cluster (``dask scheduler`` + ``dask worker``, or
  dask-jobqueue's ``SLURMCluster``), through ``Client(ADDRESS).get_executor()``;
* ``--local-cluster N``: a Dask ``LocalCluster`` of N single-threaded worker processes;
* otherwise a local pool of ``--jobs`` spawned processes.

A sweep's notebook is a path from the repository root, where the command runs (``make sweep``
does). ``--csv FILE`` writes a copy of the table elsewhere; ``make sweep`` writes the book's copy into
the package, ``mtlib/sweep/results/NAME.csv`` (read by :func:`mtlib.sweep.load_results`).

Chapter: sweeps (and ``make sweep NAME=...`` for boustany, stampacchia, training, training_valid).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mtlib.sweep import RESULTS_CSV, map_grid, run_sweep
from mtlib.sweep._store import write_csv_atomic
from mtlib.sweep.points import training_point, training_valid_point


@dataclass(frozen=True)
class Sweep:
    """A named sweep: a notebook of the book (path from the repository root), its grid, and
    optionally its function form (a picklable ``fn(**point) -> dict`` giving the same records)."""

    notebook: str
    grid: object
    description: str
    function: Callable[..., dict] | None = None


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
        training_point,
    ),
    "training_valid": Sweep(
        "book/training_valid.ipynb",
        [{"n_samples": 1797, "epochs": 6, "seeds": [0, 1, 2], "batches": 40, "batch_size": size,
          "lr": 0.05 * size / 32} for size in _TRAINING_BATCH_SIZES],
        "PyTorch's gradient against the perturbed-branch gradient: protocol and training, four precisions",
        training_valid_point,
    ),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m mtlib.sweep NAME [--jobs N | --local-cluster N | --scheduler ADDRESS]
    [--function] [--retries R] [--out DIR] [--csv FILE]``.

    Prints a one-line summary and the error of each failed point.

    Returns:
        The exit status: 0 when every point ran (or was cached), 1 when some failed.
    """
    parser = argparse.ArgumentParser(
        prog="python -m mtlib.sweep", description="Run a named sweep of the book.",
        epilog="Without --scheduler or --local-cluster: a local pool of --jobs processes.")
    parser.add_argument("name", choices=sorted(SWEEPS), help="which sweep to run")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--jobs", type=int, default=max(1, min(4, os.cpu_count() or 1)),
                       help="worker processes of the local pool")
    where.add_argument("--scheduler", metavar="ADDRESS", default=None,
                       help="run on an existing Dask cluster, e.g. tcp://host:8786")
    where.add_argument("--local-cluster", metavar="N", type=int, default=None,
                       help="run on a Dask LocalCluster of N single-threaded worker processes")
    parser.add_argument("--function", action="store_true",
                        help="run the sweep's function form (no notebooks; map_grid)")
    parser.add_argument("--retries", type=int, default=1, help="restarts of a kernel that fails to start")
    parser.add_argument("--out", default=None, help="output folder (default _build/sweeps/NAME)")
    parser.add_argument("--csv", default=None, help="also write the results table to this file")
    args = parser.parse_args(argv)
    sweep = SWEEPS[args.name]
    if args.function and sweep.function is None:
        parser.error(f"sweep {args.name!r} has no function form")
    out = Path(args.out or Path("_build") / "sweeps" / args.name)
    notebook = Path(sweep.notebook)  # a path from the repository root, where make sweep runs
    if not args.function and not notebook.is_file():
        parser.error(f"{sweep.notebook} not found: run from the repository root")
    start = time.perf_counter()
    with _executor(args.scheduler, args.local_cluster) as executor:
        if args.function:
            table = map_grid(sweep.function, sweep.grid, executor=executor, jobs=args.jobs)
            write_csv_atomic(table, out / RESULTS_CSV)
        else:
            table = run_sweep(notebook, sweep.grid, out, jobs=args.jobs, executor=executor,
                              retries=args.retries)
    if args.csv:
        write_csv_atomic(table, args.csv)
    failed = table[table["status"] == "failed"]
    cached = int((table["status"] == "cached").sum())
    print(f"{args.name}: {len(table)} runs, {cached} cached, {len(failed)} failed, "
          f"{time.perf_counter() - start:.1f} s; results in {out / RESULTS_CSV}")
    for _, row in failed.iterrows():
        print(f"  run {row['run']} failed: {row['error']}")
    return 1 if len(failed) else 0


@contextlib.contextmanager
def _executor(scheduler: str | None, local_cluster: int | None):
    """A Dask executor for ``--scheduler``/``--local-cluster``, else ``None`` (the local pool)."""
    if scheduler is None and local_cluster is None:
        yield None
        return
    # optional dependency (the [sweep] extra): only a Dask run needs it
    from distributed import Client, LocalCluster

    with contextlib.ExitStack() as stack:
        if scheduler is None:
            cluster = stack.enter_context(LocalCluster(n_workers=local_cluster, threads_per_worker=1,
                                                       processes=True, dashboard_address=":0",
                                                       silence_logs=logging.ERROR))
            client = stack.enter_context(Client(cluster))
        else:
            client = stack.enter_context(Client(scheduler))
        yield client.get_executor()
