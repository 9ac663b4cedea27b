"""What a sweep keeps on disk: atomic writes, the per-point record that makes reruns resumable,
and the book's sweep tables shipped inside the package.

A point of :func:`mtlib.sweep.run_sweep` leaves ``<stem>-<run>.ipynb`` (the executed notebook)
and then ``<stem>-<run>.json``: the SHA-256 of the source notebook, the parameters, the status,
the error, the recorded values and the seconds. Both are written to a temporary file in the same
folder and renamed (``os.replace``, atomic on POSIX and Windows), the record last, so a crash or
a killed worker leaves either a complete point or one a rerun does not trust.

Chapter: sweeps.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path

import pandas as pd

# The tables of the book's sweeps (``make sweep NAME=...`` writes them): package data, so that a
# chapter opened alone (Colab) reads them from the installed mtlib.
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def temporary_path(path: Path) -> Path:
    """A fresh name beside ``path`` (same folder, so ``os.replace`` is a rename); keeps the suffix."""
    return path.with_name(f".{path.stem}.{uuid.uuid4().hex[:12]}.tmp{path.suffix}")


def remove_temporaries(path: Path) -> None:
    """Remove what a killed writer of ``path`` left (its temporary files); never trusted anyway."""
    for tmp in path.parent.glob(f".{path.stem}.*.tmp{path.suffix}"):
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    tmp = temporary_path(path)
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_csv_atomic(table: pd.DataFrame, path) -> None:
    """``table.to_csv(path, index=False)`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, table.to_csv(index=False))


def file_digest(path) -> str:
    """SHA-256 of a file's bytes: a notebook's identity for the cache."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def parameters_key(parameters: dict) -> str:
    """Canonical JSON of a point's parameters (key order does not matter)."""
    return json.dumps(parameters, sort_keys=True)


def cached_result(output: Path, digest: str, parameters: dict) -> dict | None:
    """The stored result of a point whose notebook ran to the end with the same source and
    parameters, with status ``"cached"``; ``None`` when it must run (absent, failed, changed)."""
    stored = output.with_suffix(".json")
    if not (output.is_file() and stored.is_file()):
        return None
    try:
        saved = json.loads(stored.read_text())
    except (OSError, ValueError):
        return None
    if (saved.get("status") != "ok" or saved.get("notebook_sha256") != digest
            or saved.get("parameters") != parameters_key(parameters)):
        return None
    return {"status": "cached", "error": "", "values": saved["values"], "seconds": saved["seconds"]}


def store_result(output: Path, digest: str, parameters: dict, result: dict) -> None:
    """Write the record of a finished point (after its notebook is in place)."""
    saved = {"notebook_sha256": digest, "parameters": parameters_key(parameters), **result}
    write_text_atomic(output.with_suffix(".json"), json.dumps(saved, indent=1, sort_keys=True))


def load_results(name: str) -> pd.DataFrame:
    """The table of the book's sweep ``name``, as shipped in the installed package.

    ``make sweep NAME=name`` writes it to ``mtlib/sweep/results/NAME.csv`` (package data), so the
    sweeps chapter reads it in a checkout and on Colab alike. Empty strings stay strings (a
    successful run has ``error == ""``); missing numbers are NaN.

    Raises:
        FileNotFoundError: no table of that name; the message lists the shipped ones.

    Examples:
        >>> table = load_results("boustany")
        >>> len(table), bool((table["status"] == "ok").all()), table["error"].iloc[0]
        (24, True, '')
    """
    path = RESULTS_DIR / f"{name}.csv"
    if not path.is_file():
        shipped = sorted(p.stem for p in RESULTS_DIR.glob("*.csv"))
        raise FileNotFoundError(f"load_results: no sweep table {name!r}; shipped: {shipped}")
    table = pd.read_csv(path, dtype={"error": str})
    table["error"] = table["error"].fillna("")  # a successful run has error "", not NaN
    return table
