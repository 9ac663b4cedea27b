"""The census across PyTorch releases: one shipped table per release, and what changed between them.

PyTorch's kink rules are not fixed: a release can move the derivative an op returns at its kink
(torch 2.14 changed ``clamp``, ``clamp_min``, ``clamp_max``, ``fmax`` and ``fmin``, pytorch PR
#191142). So the census is kept per release. ``releases/<release>.csv`` is the full census
(:func:`mtlib.census.to_frame`) measured on that release, the torch version in every row (column
``torch``), written by ``python -m mtlib.census --csv PATH``. From those tables:

- :func:`history`: PyTorch's reverse-mode answer (the Jacobian from backward, a measurement that
  does not depend on how the census judges it), one column per shipped release;
- :func:`changes`: the rows whose answer differs between two consecutive shipped releases, with
  the release that changed them and the upstream change where it is known;
- :func:`compare` and :func:`check_release`: a live measurement against the shipped table of the
  running release. On a shipped release a difference is a failure (the table or the code is
  wrong); on a release without a table the differences from the nearest shipped release are
  news, printed and returned instead.

Chapter: census (history, compare); relu, boustany, lexicographic, directional and related check
their release-specific facts with :func:`check_release`.
"""

from __future__ import annotations

import importlib.resources
import re
from collections.abc import Mapping

import pandas as pd
import torch

from mtlib.census._format import format_jacobian

ANSWERS = ("reverse", "forward")
"""The columns that are measurements; the others (rule, verdicts) are the census's reading of them."""

# Upstream changes, where known: (release that first ships the change, op) -> pull request.
# margin_ranking_loss and hinge_embedding_loss are written with clamp_min inside ATen.
_PR_191142 = "pytorch #191142 (issues #184572, #184574)"
UPSTREAM: dict[tuple[str, str], str] = {
    ("2.14.1", op): _PR_191142 for op in (
        "torch.clamp(x, 0, 6)", "torch.clamp_min(x, 0)", "torch.clamp(x, min=y)", "torch.clamp(x, max=y)",
        "torch.clamp_min(x, y)", "torch.clamp_max(x, y)", "torch.clamp(x, min=y, max=z)",
    )
} | {("2.14.1", op): _PR_191142 + ", through clamp_min" for op in (
    "F.margin_ranking_loss(x, 0, 1)", "F.hinge_embedding_loss(x, -1, margin=0)")}


def _key(release: str) -> tuple[int, int, int]:
    match = re.match(r"(\d+)\.(\d+)\.(\d+)", release)
    if match is None:
        raise ValueError(f"not a torch release: {release!r} (expected 'X.Y.Z', e.g. '2.13.0')")
    return tuple(int(part) for part in match.groups())


def torch_release(version: str | None = None) -> str:
    """The release ``X.Y.Z`` of a torch version string (default: the installed torch).

    Examples:
        >>> torch_release("2.14.1+cu130"), torch_release("2.15.0.dev20261001")
        ('2.14.1', '2.15.0')
    """
    return ".".join(map(str, _key(torch.__version__ if version is None else version)))


def _tables():
    return importlib.resources.files(__package__).joinpath("releases")


def shipped_releases() -> tuple[str, ...]:
    """The releases with a shipped census table, oldest first.

    Examples:
        >>> shipped_releases()[:2]
        ('2.13.0', '2.14.1')
    """
    names = [p.name[:-4] for p in _tables().iterdir() if p.name.endswith(".csv")]
    return tuple(sorted(names, key=_key))


def _cell(value: str) -> str | bool | None:
    return {"True": True, "False": False, "": None}.get(value, value)


def release_table(release: str) -> pd.DataFrame:
    """The full census measured on ``release`` (a shipped one), as :func:`~mtlib.census.to_frame`
    wrote it, with its ``torch`` column.

    Raises:
        LookupError: no table is shipped for ``release``.

    Examples:
        >>> table = release_table("2.13.0")
        >>> table.loc[table["op"] == "torch.relu", ["torch", "reverse"]].values.tolist()
        [['2.13.0+cpu', '0']]
    """
    if release not in shipped_releases():
        raise LookupError(f"release_table: no census table shipped for torch {release} "
                          f"(shipped: {', '.join(shipped_releases())})")
    with _tables().joinpath(f"{release}.csv").open() as f:
        return _read_table(f)


def _read_table(f) -> pd.DataFrame:
    """A census table as ``python -m mtlib.census --csv`` writes it: strings, and True/False/None
    in the verdict columns."""
    table = pd.read_csv(f, dtype=str, keep_default_na=False)
    for column in table.columns.difference(("torch", "op", "kink", "variables", *ANSWERS)):
        if set(table[column]) <= {"True", "False", ""}:
            table[column] = table[column].map(_cell).astype(object)
    return table


def history() -> pd.DataFrame:
    """PyTorch's reverse-mode answer at each kink of the census, one column per shipped release.

    Columns ``op``, ``kink`` and one per release in :func:`shipped_releases` (``"2.13.0"``, ...),
    holding the Jacobian from backward as :func:`~mtlib.census.format_jacobian` writes it;
    ``None`` where a release's census lacks the row. Rows in census order.

    Examples:
        >>> h = history().set_index(["op", "kink"])
        >>> h.loc[("torch.clamp_min(x, 0)", "x = 0"), ["2.13.0", "2.14.1"]].tolist()
        ['1', '0']
    """
    answers = {release: release_table(release).set_index(["op", "kink"])["reverse"]
               for release in shipped_releases()}
    keys = list(dict.fromkeys(key for column in answers.values() for key in column.index))
    frame = pd.DataFrame(keys, columns=["op", "kink"])
    for release, column in answers.items():
        frame[release] = [column.get(key) for key in keys]
    return frame


def changes(frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """The rows of :func:`history` whose answer changed between two consecutive shipped releases.

    Adds ``changed in`` (the release that first returns the new answer) and ``upstream`` (the
    pull request, where known; ``""`` otherwise). With ``frame``, a census of the installed torch
    (:func:`~mtlib.census.to_frame`), adds its reverse answers as a column ``installed``.

    Examples:
        >>> c = changes()
        >>> c.loc[c["op"] == "torch.clamp_min(x, 0)", ["2.13.0", "2.14.1", "changed in"]].values.tolist()
        [['1', '0', '2.14.1']]
    """
    releases = shipped_releases()
    table = history()
    changed_in = pd.Series("", index=table.index)
    for old, new in zip(releases, releases[1:]):
        changed_in = changed_in.mask((table[old] != table[new]) & (changed_in == ""), new)
    table = table.assign(**{"changed in": changed_in})[changed_in != ""]
    table["upstream"] = [UPSTREAM.get((release, op), "")
                         for op, release in zip(table["op"], table["changed in"])]
    if frame is not None:
        installed = frame.set_index(["op", "kink"])["reverse"]
        table["installed"] = [installed.get(key) for key in zip(table["op"], table["kink"])]
    return table.reset_index(drop=True)


def nearest_release(release: str | None = None) -> str:
    """The shipped release closest to ``release`` (default: the installed torch's): itself when
    shipped, else the newest shipped release before it, else the oldest shipped one.

    Examples:
        >>> nearest_release("2.14.1"), nearest_release("2.15.0"), nearest_release("2.11.0")
        ('2.14.1', '2.14.1', '2.13.0')
    """
    release = torch_release(release)
    shipped = shipped_releases()
    before = [r for r in shipped if _key(r) <= _key(release)]
    return before[-1] if before else shipped[0]


def compare(frame: pd.DataFrame, release: str | None = None, columns=ANSWERS) -> pd.DataFrame:
    """Where a census ``frame`` (:func:`~mtlib.census.to_frame`) differs from a shipped table.

    Compared against the table of ``release`` (default: :func:`nearest_release` of the installed
    torch), row by row on ``(op, kink)``, in ``columns`` (default: the answers, ``reverse`` and
    ``forward``). A row in only one of the two shows ``None`` on the other side.

    Returns:
        One row per difference: ``op``, ``kink``, ``column``, ``shipped`` (the release's
        value), ``measured`` (``frame``'s value); empty when they agree.

    Examples:
        >>> from mtlib.census import run, to_frame
        >>> compare(to_frame(run()), "2.13.0").empty == (torch_release() == "2.13.0")
        True
    """
    release = nearest_release(release)
    shipped = release_table(release).set_index(["op", "kink"])
    measured = frame.set_index(["op", "kink"])
    rows = []
    for key in list(dict.fromkeys([*shipped.index, *measured.index])):
        for column in columns:
            old = shipped[column].get(key) if key in shipped.index else None
            new = measured[column].get(key) if key in measured.index else None
            if old != new:
                rows.append({"op": key[0], "kink": key[1], "column": column, "shipped": old, "measured": new})
    return pd.DataFrame(rows, columns=["op", "kink", "column", "shipped", "measured"], dtype=object)


def check_release(observed: Mapping[tuple[str, str], object], column: str = "reverse",
                  release: str | None = None) -> pd.DataFrame:
    """Check measured answers against the shipped census table of the running release.

    ``observed`` maps ``(op, kink)`` of census rows to what a chapter measured there: a string
    as :func:`~mtlib.census.format_jacobian` writes it, a float (a 1x1 Jacobian) or rows of
    floats. ``release`` defaults to the installed torch's.

    Returns:
        The differences (as :func:`compare` returns them); empty when none.

    Raises:
        AssertionError: ``release`` has a shipped table and a measured answer differs from it.
            On a release without a table, the differences from :func:`nearest_release` are
            printed and returned instead: what a newer or older torch changed is news, not a
            failure.

    Examples:
        >>> check_release({("torch.relu", "x = 0"): 0.0}, release="2.13.0").empty
        True
        >>> _ = check_release({("torch.clamp_min(x, 0)", "x = 0"): 1.0}, release="2.15.0")
        torch 2.15.0 has no shipped census table; differences from torch 2.14.1:
        torch.clamp_min(x, 0) at x = 0 (reverse): 2.14.1 gives 0, measured 1
    """
    def formatted(value: object) -> str:
        if isinstance(value, str):
            return value
        if isinstance(value, float | int):
            return format_jacobian(((float(value),),))
        return format_jacobian(tuple(tuple(float(v) for v in row) for row in value))

    release = torch_release(release)
    nearest = nearest_release(release)
    shipped = release_table(nearest).set_index(["op", "kink"])[column]
    unknown = [key for key in observed if key not in shipped.index]
    if unknown:
        raise KeyError(f"check_release: not rows of the census: {unknown}")
    rows = [{"op": op, "kink": kink, "column": column, "shipped": shipped[op, kink], "measured": formatted(v)}
            for (op, kink), v in observed.items() if shipped[op, kink] != formatted(v)]
    diff = pd.DataFrame(rows, columns=["op", "kink", "column", "shipped", "measured"], dtype=object)
    lines = [f"{r.op} at {r.kink} ({r.column}): {nearest} gives {r.shipped}, measured {r.measured}"
             for r in diff.itertuples()]
    if nearest == release:
        assert not lines, f"torch {release} differs from its shipped census table:\n" + "\n".join(lines)
    elif lines:
        print(f"torch {release} has no shipped census table; differences from torch {nearest}:")
        print("\n".join(lines))
    return diff
