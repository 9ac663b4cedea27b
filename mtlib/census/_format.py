"""How the census writes a Jacobian: the strings of its tables, the shipped ones included.

Its own module so that the census (:mod:`mtlib.census`) and the release history
(:mod:`mtlib.census._history`), which reads and compares those strings, both import it.

Chapter: census.
"""

from __future__ import annotations


def _fmt(v: float) -> str:
    return "nan" if v != v else f"{round(v, 4) + 0.0:g}"


def format_jacobian(rows: tuple[tuple[float, ...], ...] | None) -> str:
    """``"0.5"`` for a 1x1 Jacobian, ``"(1, 0)"`` for one row, rows joined by ``"; "``, 4 digits.

    Examples:
        >>> format_jacobian(((1.0, 0.0), (1 / 3, -0.0)))
        '(1, 0); (0.3333, 0)'
    """
    if rows is None:
        return "n/a"
    if len(rows) == 1 and len(rows[0]) == 1:
        return _fmt(rows[0][0])
    return "; ".join("(" + ", ".join(_fmt(v) for v in row) + ")" for row in rows)
