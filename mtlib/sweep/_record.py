"""What a sweep point records: :func:`record` inside a notebook, :func:`read_records` back out.

Chapter: boustany, stampacchia, training (``record``); sweeps (the reader).
"""

from __future__ import annotations

import math
import numbers

RECORD_MIME = "application/vnd.mtlib.record+json"
# written by run_sweep / map_grid themselves: a recorded value may not take these names
TABLE_COLUMNS = ("run", "status", "error", "seconds", "notebook")


def record(**values) -> None:
    """Record named results of a notebook run, for :func:`mtlib.sweep.run_sweep` to collect.

    In an IPython kernel, publishes ``values`` as a display output of MIME type
    ``application/vnd.mtlib.record+json`` plus a ``text/plain`` line; elsewhere does nothing.
    Values must be numbers, strings, booleans, ``None``, tensors/arrays (stored as lists) or
    lists of these; non-finite floats are recorded as ``None`` (NaN in the table).

    Raises:
        TypeError: a value of another type; the message names it.
        ValueError: a name that the sweep writes itself (``run``, ``status``, ``error``,
            ``seconds``, ``notebook``), which would overwrite its column.

    Examples:
        >>> record(fprime0=-1.5, rule="uniform")   # outside IPython: a no-op
    """
    clean = clean_values(values, "record")
    try:  # IPython is optional (the [book] extra): without it there is nothing to display to
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        return
    if get_ipython() is None:
        return
    summary = ", ".join(f"{k}={_short(v)}" for k, v in clean.items())
    display({RECORD_MIME: clean, "text/plain": f"recorded for sweeps: {summary}"}, raw=True)


def clean_values(values: dict, caller: str) -> dict:
    """``values`` as JSON-ready data (the rules of :func:`record`), none named like a table column."""
    for name in values:
        if name in TABLE_COLUMNS:
            raise ValueError(f"{caller}: `{name}` is a column that run_sweep writes itself "
                             f"({', '.join(TABLE_COLUMNS)}); record it under another name")
    return {name: _jsonable(name, value, caller) for name, value in values.items()}


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


def _jsonable(name: str, value, caller: str = "record"):
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        return value if math.isfinite(value) else None
    if hasattr(value, "tolist"):  # torch tensors, numpy arrays and scalars
        return _jsonable(name, value.tolist(), caller)
    if isinstance(value, (list, tuple)):
        return [_jsonable(name, v, caller) for v in value]
    raise TypeError(
        f"{caller}: `{name}` must be a number, string, bool, None, tensor/array or list, "
        f"got {type(value).__name__}"
    )


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    return str(value)
