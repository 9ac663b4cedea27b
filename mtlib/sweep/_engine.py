"""The sweep engine: a grid of points run on any ``concurrent.futures.Executor``, gathered into one table.

:func:`run_sweep` executes a notebook per point with papermill, resumably; :func:`map_grid` calls
a plain function per point. Both hand the points to ``executor`` (a Dask cluster through
``client.get_executor()``, or anything with ``submit``) or, by default, to a local pool of
``jobs`` spawned processes, and never schedule anything themselves.

Chapter: sweeps.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import multiprocessing
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from mtlib._validate import check_int
from mtlib.sweep._record import clean_values, read_records
from mtlib.sweep._store import (
    cached_result,
    file_digest,
    remove_temporaries,
    store_result,
    temporary_path,
    write_csv_atomic,
)

RESULTS_CSV = "results.csv"

# What a kernel that could not start says (papermill/jupyter_client when many kernels start at
# once: a port taken between its choice and its bind, or the kernel gone before its first reply).
_STARTUP_RACES = ("Address already in use", "ZMQError", "Kernel died before replying to kernel_info",
                  "Kernel didn't respond", "kernel_info")

# One notebook at a time per process may own this process's stdout/stderr (see _output_to).
_OUTPUT_LOCK = threading.Lock()


def expand_grid(grid) -> list[dict]:
    """The list of parameter dicts of a grid.

    A list of dicts is returned as is (copied); a dict of lists becomes their cartesian product,
    in key order (the last key varies fastest).

    Raises:
        TypeError: ``grid`` is neither, a point is not a dict, or a dict value is not a list.
        ValueError: the grid is empty.

    Examples:
        >>> expand_grid({"a": [1, 2], "b": ["x"]})
        [{'a': 1, 'b': 'x'}, {'a': 2, 'b': 'x'}]
    """
    if isinstance(grid, Mapping):
        for key, values in grid.items():
            if not isinstance(values, (list, tuple)):
                raise TypeError(
                    f"run_sweep: `grid[{key!r}]` must be a list of values, got {type(values).__name__}"
                )
        points = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]
    elif isinstance(grid, (list, tuple)):
        for i, point in enumerate(grid):
            if not isinstance(point, Mapping):
                raise TypeError(
                    f"run_sweep: `grid[{i}]` must be a dict of parameters, got {type(point).__name__}"
                )
        points = [dict(point) for point in grid]
    else:
        raise TypeError(
            f"run_sweep: `grid` must be a list of dicts or a dict of lists, got {type(grid).__name__}"
        )
    if not points:
        raise ValueError("run_sweep: `grid` must hold at least one point")
    return points


def run_sweep(
    notebook,
    grid,
    out_dir,
    jobs: int = 1,
    *,
    executor: Executor | None = None,
    retries: int = 1,
    kernel_name: str | None = None,
    cell_timeout: float | None = 600,
    progress: bool = True,
) -> pd.DataFrame:
    """Execute ``notebook`` once per grid point with papermill and tabulate what it recorded.

    Each point runs through ``papermill.execute_notebook`` where ``executor`` puts it, with the
    point's values injected after the ``parameters`` cell and the notebook's folder as working
    directory. A point whose run raises is marked ``"failed"`` with the error
    (``"ValueError: ..."``) and the sweep goes on; so is a point whose worker process died. A
    tqdm bar counts finished points.

    Resumable and idempotent: a point whose executed notebook and record (``<stem>-<run>.json``)
    are in ``out_dir`` for the same notebook content (SHA-256) and parameters comes back as
    ``"cached"`` without running; a failed point runs again. Notebooks, records and the CSV are
    written to a temporary file and renamed, so a crash never leaves a half-written file that a
    rerun would trust (:mod:`mtlib.sweep._store`).

    Args:
        notebook: path of the ``.ipynb`` to run (needs a kernelspec, or ``kernel_name``).
        grid: list of parameter dicts, or dict of lists (cartesian product), see
            :func:`expand_grid`.
        out_dir: folder for the executed notebooks ``<stem>-<run>.ipynb``, their records
            ``<stem>-<run>.json``, the kernels' logs ``<stem>-<run>.log`` and ``results.csv``;
            every worker must see it (a shared file system on a cluster).
        jobs: worker processes of the local pool (ignored when ``executor`` is given).
        executor: any ``concurrent.futures.Executor``; a Dask cluster as
            ``Client(address).get_executor()``. ``None``: a pool of ``jobs`` spawned processes.
            Start Dask workers with one thread each: a notebook owns its process's stdout and
            stderr while it runs, so notebooks in one process take turns.
        retries: how many times a kernel that fails to start (a port race such as "Address
            already in use", or no reply to ``kernel_info``) is started again before the point
            is marked failed.
        kernel_name: overrides the notebook's kernelspec.
        cell_timeout: seconds allowed per cell (``None``: no limit).
        progress: show the progress bar.

    Returns:
        A DataFrame, one row per grid point in grid order: ``run``, the parameters, ``status``
        (``"ok"`` / ``"cached"`` / ``"failed"``), ``error`` (empty unless failed), the recorded
        values (in name order, as the notebook format stores them), ``seconds`` (of the run
        that produced them) and ``notebook`` (file name in ``out_dir``). Lists are stored as
        JSON text. The same table is written to ``out_dir/results.csv``.

    With the local pool, workers are started with the ``spawn`` method (safe with torch's
    threads), so a script that calls ``run_sweep`` at import time needs the
    ``if __name__ == "__main__":`` guard; notebooks and ``python -m mtlib.sweep`` need nothing.

    Raises:
        FileNotFoundError: ``notebook`` does not exist.
        TypeError, ValueError: bad ``grid``, ``jobs`` or ``retries``.

    Examples:
        ``run_sweep("book/boustany.ipynb", {"second_max": ["torch", "first"]}, "_build/s", jobs=2)``
    """
    notebook = Path(notebook)
    if not notebook.is_file():
        raise FileNotFoundError(f"run_sweep: `notebook` {str(notebook)!r} does not exist")
    points = expand_grid(grid)
    check_int("run_sweep", "jobs", jobs)
    check_int("run_sweep", "retries", retries, min=0)
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    digest = file_digest(notebook)
    width = max(3, len(str(len(points) - 1)))
    names = [f"{notebook.stem}-{i:0{width}d}.ipynb" for i in range(len(points))]
    results: list[dict | None] = [cached_result(out_dir / n, digest, p) for n, p in zip(names, points)]
    todo = {i: (_run_point, str(notebook.resolve()), str(out_dir / names[i]), points[i], digest,
                kernel_name, cell_timeout, retries, executor is None and jobs > 1)
            for i, res in enumerate(results) if res is None}
    for i in todo:
        remove_temporaries(out_dir / names[i])  # a killed worker's half-written notebook
    cached = len(points) - len(todo)
    for i, res in _drive(todo, executor, jobs, f"sweep {notebook.stem}", progress, len(points), cached):
        results[i] = res
    table = _table(points, results, extra=[{"notebook": n} for n in names])
    write_csv_atomic(table, out_dir / RESULTS_CSV)
    return table


def map_grid(fn: Callable[..., dict], grid, *, executor: Executor | None = None, jobs: int = 1,
             progress: bool = True) -> pd.DataFrame:
    """Call ``fn(**point)`` for every grid point and tabulate the dicts it returns.

    The function form of :func:`run_sweep`, for grids where starting a kernel per point would
    dominate: no notebook, no files. ``fn`` must be picklable (a module-level function) and
    return a dict of values of the kinds :func:`mtlib.sweep.record` accepts. A point that
    raises, or whose worker dies, is ``"failed"`` with the error text; the others still run.
    Nothing is kept on disk, so nothing resumes: on Dask, a point whose worker dies after it
    finished but before its result reached the client runs again (Dask recomputes lost results;
    :func:`run_sweep` finds such a point in ``out_dir`` and does not execute it twice).

    Args:
        fn: the point function, e.g. :func:`mtlib.sweep.points.training_point`.
        grid: as in :func:`expand_grid`.
        executor: any ``concurrent.futures.Executor`` (Dask: ``client.get_executor()``);
            ``None``: a pool of ``jobs`` spawned processes.
        jobs: worker processes of the local pool.
        progress: show the progress bar.

    Returns:
        One row per point in grid order: ``run``, the parameters, ``status`` (``"ok"`` /
        ``"failed"``), ``error``, the returned values in name order, ``seconds``.

    Examples:
        ``map_grid(training_point, {"batch_size": [8, 32]}, executor=client.get_executor())``
    """
    points = expand_grid(grid)
    check_int("map_grid", "jobs", jobs)
    results: list[dict | None] = [None] * len(points)
    todo = {i: (_call_point, fn, point) for i, point in enumerate(points)}
    desc = f"map {getattr(fn, '__name__', 'fn')}"
    for i, res in _drive(todo, executor, jobs, desc, progress, len(points), 0):
        results[i] = res
    return _table(points, results)


def _drive(todo: dict, executor, jobs: int, desc: str, progress: bool, total: int, done: int):
    """Submit ``todo`` ({index: (function, *args)}) and yield (index, result) as points finish.

    A result is the worker's dict, or a failure naming what killed the worker. Each submission
    carries a fresh token, so a Dask cluster never answers a resubmitted point from an earlier
    (failed) task of the same key.
    """
    failed = 0
    with contextlib.ExitStack() as stack:
        if executor is None and todo:
            context = multiprocessing.get_context("spawn")
            pool = ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=context)
            executor = stack.enter_context(pool)
        futures = {executor.submit(_tokened, uuid.uuid4().hex, *task): i for i, task in todo.items()}
        # interrupted (Ctrl-C): drop the points not started; running ones finish and are kept
        stack.callback(lambda: [future.cancel() for future in futures])
        bar = stack.enter_context(
            tqdm(total=total, initial=done, desc=desc, unit="run", disable=not progress)
        )
        bar.set_postfix(cached=done, failed=failed)
        for future in as_completed(futures):
            try:
                res = future.result()
            except Exception as exc:  # the worker itself died (BrokenProcessPool, KilledWorker, ...)
                res = {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "values": {},
                       "seconds": 0.0}
            failed += res["status"] == "failed"
            bar.set_postfix(cached=done, failed=failed)
            bar.update()
            yield futures[future], res


def _tokened(token: str, function, *args) -> dict:
    """Run ``function(*args)``; ``token`` only makes the task unique (see :func:`_drive`)."""
    return function(*args)


def _table(points, results, extra=None) -> pd.DataFrame:
    """Columns: run, the parameters, status, error, every recorded name (sorted), seconds, extra."""
    rows = []
    for i, (point, res) in enumerate(zip(points, results)):
        row = {"run": i, **{k: _cell(v) for k, v in point.items()}}
        row.update(status=res["status"], error=res["error"])
        row.update({k: _cell(v) for k, v in res["values"].items()})
        row["seconds"] = round(res["seconds"], 2)
        row.update(extra[i] if extra else {})
        rows.append(row)
    head = list(dict.fromkeys(["run", *itertools.chain.from_iterable(points), "status", "error"]))
    recorded = sorted({k for res in results for k in res["values"]} - set(head))
    tail = ["seconds", *(extra[0] if extra else {})]
    return pd.DataFrame(rows, columns=[*head, *recorded, *tail])


def _call_point(fn, point: dict) -> dict:
    """Worker of :func:`map_grid`: ``fn(**point)``; never raises, reports the error instead."""
    start = time.perf_counter()
    try:
        values = fn(**point)
        if not isinstance(values, Mapping):
            raise TypeError(f"map_grid: `fn` must return a dict of values, got {type(values).__name__}")
        values = clean_values(dict(values), "map_grid")
    except Exception as exc:  # the sweep goes on: any failure is reported in the table
        return {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "values": {},
                "seconds": time.perf_counter() - start}
    return {"status": "ok", "error": "", "values": values, "seconds": time.perf_counter() - start}


def _run_point(notebook: str, output: str, parameters: dict, digest: str, kernel_name, cell_timeout,
               retries: int, single_thread: bool) -> dict:
    """Worker of :func:`run_sweep`: run one grid point; never raises, reports the error instead.

    Checks the cache first (a Dask worker may get a point again after another worker died
    having finished it), executes into a temporary notebook renamed at the end, then writes the
    point's record.
    """
    import papermill  # optional dependency ([book] extra): only notebook workers need it

    output = Path(output)
    cached = cached_result(output, digest, parameters)
    if cached is not None:
        return cached
    if single_thread:
        # several kernels share the cores: one thread each avoids oversubscription
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    start = time.perf_counter()
    tmp = temporary_path(output)
    for attempt in range(retries + 1):
        status, error = "ok", ""
        try:
            with _output_to(output.with_suffix(".log"), append=attempt > 0):
                papermill.execute_notebook(
                    notebook, str(tmp), parameters=parameters, kernel_name=kernel_name,
                    cwd=str(Path(notebook).parent), progress_bar=False, log_output=False,
                    execution_timeout=cell_timeout,
                )
        except papermill.PapermillExecutionError as exc:
            status, error = "failed", f"{exc.ename}: {exc.evalue}"
        except Exception as exc:  # the sweep goes on: any failure is reported in the table
            status, error = "failed", f"{type(exc).__name__}: {exc}"
            if any(mark in error for mark in _STARTUP_RACES) and attempt < retries:
                continue  # the kernel never started: try again
        break
    values = {}
    if tmp.is_file():
        values = read_records(tmp)
        os.replace(tmp, output)
    result = {"status": status, "error": error, "values": values, "seconds": time.perf_counter() - start}
    store_result(output, digest, parameters, result)
    return result


@contextlib.contextmanager
def _output_to(log: Path, append: bool = False):
    """Send this process's stdout/stderr, and so the kernel's log lines, to ``log``.

    The redirection is per process (file descriptors 1 and 2, which the kernel inherits), so
    notebooks in one process (a Dask worker with several threads) take turns under a lock.
    """
    with _OUTPUT_LOCK, open(log, "a" if append else "w") as f:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = [os.dup(1), os.dup(2)]
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in zip((1, 2), saved):
                os.dup2(copy, fd)
                os.close(copy)


def _cell(value):
    return json.dumps(value) if isinstance(value, (list, tuple, dict)) else value
