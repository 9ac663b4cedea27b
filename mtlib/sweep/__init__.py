"""Parameter sweeps over the book's notebooks (papermill) and over plain functions, on any executor.

A chapter with a ``parameters`` cell can be rerun over a grid of parameter values:
:func:`run_sweep` executes one copy of the notebook per grid point, keeps going past a failing
point, and gathers what each run recorded with :func:`record` into a :class:`pandas.DataFrame`,
written as CSV next to the executed notebooks. It is resumable: a rerun skips the points that
already ran with the same notebook and parameters (``status == "cached"``) and retries the
failed ones. :func:`map_grid` does the same for a plain function ``fn(**point) -> dict``, for
grids where a kernel per point would cost more than the point itself.

Both run where an ``executor`` puts the points: by default a local pool of spawned processes;
any ``concurrent.futures.Executor``; a Dask cluster (laptop ``LocalCluster``, Slurm/PBS through
dask-jobqueue, Kubernetes) as ``Client(address).get_executor()``.

Inside a notebook, ``record(name=value, ...)`` publishes the values as a display output of MIME
type ``application/vnd.mtlib.record+json`` (with a one-line ``text/plain`` summary), which
:func:`run_sweep` reads back from the executed notebook. In the book the same call just shows
that line, and outside IPython it does nothing.

Command line (``make sweep NAME=boustany [DASK=tcp://host:8786]``)::

    python -m mtlib.sweep NAME [--jobs N | --local-cluster N | --scheduler ADDRESS] [--function]

runs the sweep ``NAME`` registered in :mod:`mtlib.sweep.registry`. The book's tables ship with
the package (``mtlib/sweep/results/NAME.csv``) and :func:`load_results` reads them.

Chapter: boustany, stampacchia, training, training_valid, sweeps. The first four call ``record``;
sweeps uses the rest.
"""

from mtlib.sweep._engine import RESULTS_CSV, expand_grid, map_grid, run_sweep
from mtlib.sweep._record import RECORD_MIME, read_records, record
from mtlib.sweep._store import RESULTS_DIR, load_results

__all__ = [
    "RECORD_MIME",
    "RESULTS_CSV",
    "RESULTS_DIR",
    "expand_grid",
    "load_results",
    "map_grid",
    "read_records",
    "record",
    "run_sweep",
]
