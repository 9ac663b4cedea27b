"""``python -m mtlib.census [--csv PATH]``: the census of the installed torch, against the shipped releases.

Prints the census (:func:`mtlib.census.run`), the rows whose answer changed between the shipped
releases with the installed torch's answer beside them (:func:`mtlib.census.changes`), and the rows
that differ from the shipped table of the nearest release (:func:`mtlib.census.compare`). With
``--csv PATH`` it also writes the census, the torch version in every row: the table a maintainer
ships as ``mtlib/census/releases/<release>.csv`` for a new release. Exit status 0 in every case:
a difference from another release is news, not an error.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd
import torch

from mtlib.census import changes, compare, nearest_release, run, shipped_releases, to_frame, torch_release


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtlib.census", description=__doc__.splitlines()[0])
    parser.add_argument("--csv", metavar="PATH",
                        help="also write the census here, the torch version in every row")
    args = parser.parse_args(argv)

    frame = to_frame(run())
    if args.csv:
        frame.assign(torch=torch.__version__)[["torch", *frame.columns]].to_csv(args.csv, index=False)
        print(f"wrote {len(frame)} rows to {args.csv}")
    release, nearest = torch_release(), nearest_release()
    with pd.option_context("display.max_rows", None, "display.max_colwidth", 60, "display.width", 250):
        print(f"Census of torch {torch.__version__}: {len(frame)} kinks\n")
        print(frame.to_string())
        history = changes(frame)
        print(f"\nRows whose answer (reverse mode) changed between the shipped releases "
              f"({', '.join(shipped_releases())}): {len(history)}, with the installed torch's answer:\n")
        print(history.to_string())
        diff = compare(frame, nearest)
        shipped = "its own shipped table" if nearest == release else f"the nearest shipped release, {nearest}"
        rows = len(diff[["op", "kink"]].drop_duplicates())
        print(f"\ntorch {release} against {shipped}: {rows} rows differ "
              f"({len(diff)} answers, reverse and forward)")
        if len(diff):
            print(diff.to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
