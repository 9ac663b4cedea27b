"""Parameter sweeps over the book's notebooks with papermill, collected into one table.

A chapter with a ``parameters`` cell can be rerun over a grid of parameter values:
:func:`run_sweep` executes one copy of the notebook per grid point (in parallel worker
processes), keeps going past a failing point, and gathers what each run recorded with
:func:`record` into a :class:`pandas.DataFrame`, written as CSV next to the executed notebooks.

Inside a notebook, ``record(name=value, ...)`` publishes the values as a display output of MIME
type ``application/vnd.mtlib.record+json`` (with a one-line ``text/plain`` summary), which
:func:`run_sweep` reads back from the executed notebook. In the book the same call just shows
that line, and outside IPython it does nothing.

Command line (``make sweep NAME=boustany``)::

    python -m mtlib.sweep NAME [--jobs N] [--out DIR] [--csv FILE]

runs the sweep ``NAME`` registered in :mod:`mtlib.sweep.registry` (``boustany``, ``stampacchia``,
``training``) and writes the executed notebooks and ``results.csv`` into ``DIR`` (default
``_build/sweeps/NAME``).

Chapter: boustany, stampacchia, training (``record``), sweeps (``run_sweep``, ``expand_grid``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import multiprocessing
import numbers
import os
import sys
import time
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from mtlib._validate import check_int

RECORD_MIME = "application/vnd.mtlib.record+json"
RESULTS_CSV = "results.csv"
_TABLE_COLUMNS = ("run", "status", "error", "seconds", "notebook")  # written by run_sweep itself


def record(**values) -> None:
    """Record named results of a notebook run, for :func:`run_sweep` to collect.

    In an IPython kernel, publishes ``values`` as a display output of MIME type
    ``application/vnd.mtlib.record+json`` plus a ``text/plain`` line; elsewhere does nothing.
    Values must be numbers, strings, booleans, ``None``, tensors/arrays (stored as lists) or
    lists of these; non-finite floats are recorded as ``None`` (NaN in the table).

    Raises:
        TypeError: a value of another type; the message names it.
        ValueError: a name that :func:`run_sweep` uses for its own columns (``run``,
            ``status``, ``error``, ``seconds``, ``notebook``), which would overwrite them.

    Examples:
        >>> record(fprime0=-1.5, rule="uniform")   # outside IPython: a no-op
    """
    for name in values:
        if name in _TABLE_COLUMNS:
            raise ValueError(f"record: `{name}` is a column that run_sweep writes itself "
                             f"({', '.join(_TABLE_COLUMNS)}); record it under another name")
    clean = {name: _jsonable(name, value) for name, value in values.items()}
    try:  # IPython is optional (the [book] extra): without it there is nothing to display to
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        return
    if get_ipython() is None:
        return
    summary = ", ".join(f"{k}={_short(v)}" for k, v in clean.items())
    display({RECORD_MIME: clean, "text/plain": f"recorded for sweeps: {summary}"}, raw=True)


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
                    f"run_sweep: `grid[{i}]` must be a dict of parameters, got {type(point).__name__}")
        points = [dict(point) for point in grid]
    else:
        raise TypeError(
            f"run_sweep: `grid` must be a list of dicts or a dict of lists, got {type(grid).__name__}")
    if not points:
        raise ValueError("run_sweep: `grid` must hold at least one point")
    return points


def run_sweep(
    notebook,
    grid,
    out_dir,
    jobs: int = 1,
    *,
    kernel_name: str | None = None,
    cell_timeout: float | None = 600,
    progress: bool = True,
) -> pd.DataFrame:
    """Execute ``notebook`` once per grid point with papermill and tabulate what it recorded.

    Each point runs in a worker process (``jobs`` of them at a time) through
    ``papermill.execute_notebook``, with the point's values injected after the ``parameters``
    cell and the notebook's folder as working directory. A point whose run raises is marked
    ``"failed"`` with the error (``"ValueError: ..."``) and the sweep goes on. A tqdm bar
    counts finished points.

    Args:
        notebook: path of the ``.ipynb`` to run (needs a kernelspec, or ``kernel_name``).
        grid: list of parameter dicts, or dict of lists (cartesian product), see
            :func:`expand_grid`.
        out_dir: folder for the executed notebooks ``<stem>-<run>.ipynb``, the kernels' logs
            ``<stem>-<run>.log`` and ``results.csv``.
        jobs: number of worker processes.
        kernel_name: overrides the notebook's kernelspec.
        cell_timeout: seconds allowed per cell (``None``: no limit).
        progress: show the progress bar.

    Returns:
        A DataFrame, one row per grid point in grid order: ``run``, the parameters, ``status``
        (``"ok"`` / ``"failed"``), ``error`` (empty when ok), the recorded values (in name
        order, as the notebook format stores them), ``seconds``
        and ``notebook`` (file name in ``out_dir``). Lists are stored as JSON text. The same
        table is written to ``out_dir/results.csv``.

    Workers are started with the ``spawn`` method (safe with torch's threads), so a script that
    calls ``run_sweep`` at import time needs the ``if __name__ == "__main__":`` guard; notebooks
    and ``python -m mtlib.sweep`` need nothing.

    Raises:
        FileNotFoundError: ``notebook`` does not exist.
        TypeError, ValueError: bad ``grid`` or ``jobs``.

    Examples:
        ``run_sweep("book/boustany.ipynb", {"second_max": ["torch", "first"]}, "_build/s", jobs=2)``
    """
    notebook = Path(notebook)
    if not notebook.is_file():
        raise FileNotFoundError(f"run_sweep: `notebook` {str(notebook)!r} does not exist")
    points = expand_grid(grid)
    check_int("run_sweep", "jobs", jobs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    width = max(3, len(str(len(points) - 1)))
    names = [f"{notebook.stem}-{i:0{width}d}.ipynb" for i in range(len(points))]
    results: list[dict | None] = [None] * len(points)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(jobs, len(points)), mp_context=context) as pool:
        futures = {
            pool.submit(
                _run_point, str(notebook.resolve()), str((out_dir / name).resolve()), point,
                kernel_name, cell_timeout, jobs > 1,
            ): i
            for i, (name, point) in enumerate(zip(names, points))
        }
        failed = 0
        with tqdm(total=len(points), desc=f"sweep {notebook.stem}", unit="run", disable=not progress) as bar:
            for future in as_completed(futures):
                i = futures[future]
                try:
                    results[i] = future.result()
                except Exception as exc:  # the worker process itself died (BrokenProcessPool, ...)
                    results[i] = {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                                  "values": {}, "seconds": 0.0}
                failed += results[i]["status"] == "failed"
                bar.set_postfix(failed=failed)
                bar.update()
    rows = []
    for i, (name, point, res) in enumerate(zip(names, points, results)):
        row = {"run": i, **{k: _cell(v) for k, v in point.items()},
               "status": res["status"], "error": res["error"]}
        row.update({k: _cell(v) for k, v in res["values"].items()})
        row.update(seconds=round(res["seconds"], 2), notebook=name)
        rows.append(row)
    table = pd.DataFrame(rows)
    table.to_csv(out_dir / RESULTS_CSV, index=False)
    return table


def read_records(path) -> dict:
    """The values recorded with :func:`record` in an executed notebook (later calls win).

    Examples:
        >>> import nbformat
        >>> nb = nbformat.v4.new_notebook()
        >>> out = nbformat.v4.new_output("display_data", data={RECORD_MIME: {"a": 1}})
        >>> nb.cells.append(nbformat.v4.new_code_cell("", outputs=[out]))
        >>> import tempfile, os; p = os.path.join(tempfile.mkdtemp(), "nb.ipynb")
        >>> nbformat.write(nb, p); read_records(p)
        {'a': 1}
    """
    import nbformat  # optional dependency ([book] extra, with papermill): imported when used

    values: dict = {}
    for cell in nbformat.read(str(path), as_version=4).cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if RECORD_MIME in data:
                values.update(data[RECORD_MIME])
    return values


def _run_point(notebook: str, output: str, parameters: dict, kernel_name, cell_timeout,
               single_thread: bool) -> dict:
    """Worker: run one grid point; never raises, reports the error instead."""
    import papermill  # optional dependency ([book] extra); only sweep workers need it

    if single_thread:
        # several kernels share the cores: one thread each avoids oversubscription
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    start = time.perf_counter()
    status, error = "ok", ""
    try:
        with _output_to(Path(output).with_suffix(".log")):
            papermill.execute_notebook(
                notebook, output, parameters=parameters, kernel_name=kernel_name,
                cwd=str(Path(notebook).parent), progress_bar=False, log_output=False,
                execution_timeout=cell_timeout,
            )
    except papermill.PapermillExecutionError as exc:
        status, error = "failed", f"{exc.ename}: {exc.evalue}"
    except Exception as exc:  # the sweep goes on: any failure is reported in the table
        status, error = "failed", f"{type(exc).__name__}: {exc}"
    values = read_records(output) if Path(output).is_file() else {}
    return {"status": status, "error": error, "values": values, "seconds": time.perf_counter() - start}


@contextlib.contextmanager
def _output_to(log: Path):
    """Send this process's stdout/stderr, and so the kernel's log lines, to ``log``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(log, "w") as f:
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


def _jsonable(name: str, value):
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        return value if math.isfinite(value) else None
    if hasattr(value, "tolist"):  # torch tensors, numpy arrays and scalars
        return _jsonable(name, value.tolist())
    if isinstance(value, (list, tuple)):
        return [_jsonable(name, v) for v in value]
    raise TypeError(
        f"record: `{name}` must be a number, string, bool, None, tensor/array or list, "
        f"got {type(value).__name__}"
    )


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    return str(value)


def _cell(value):
    return json.dumps(value) if isinstance(value, (list, tuple, dict)) else value
