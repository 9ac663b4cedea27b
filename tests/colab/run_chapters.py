"""The Colab-like leg of the tests (``make test-colab``): chapters run as a Colab reader runs them.

Run with the python of a fresh venv that holds Colab's versions (``tests/colab/requirements.txt``)
and then ``pip install .[book]``. Checks that installing mtlib changed none of Colab's versions,
then executes each chapter with papermill from a temporary folder outside the repository (no
``book/data``, no ``benchmarks/`` beside it) and fails on the first error.
"""

import argparse
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from importlib.metadata import version
from pathlib import Path

import papermill
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PINS = dict(
    line.split("==")
    for line in (Path(__file__).parent / "requirements.txt").read_text().splitlines()
    if line and not line.startswith("#")
)
# Chapters that take over a minute on 2 CPU cores stay out of this leg (none today).
SLOW: set[str] = set()


def check_versions_kept():
    # "2.13.0+cpu" is the pin "2.13.0": compare public versions
    now = {name: version(name) for name in PINS}
    changed = {name: (pin, now[name]) for name, pin in PINS.items() if Version(now[name]).public != pin}
    if changed:
        sys.exit(f"pip install .[book] changed Colab's versions (pinned, now): {changed}")


def run_alone(src):
    """Execute one chapter in a fresh folder that holds nothing else, as Colab opens it."""
    with tempfile.TemporaryDirectory(prefix="colab-") as tmp:
        dst = Path(tmp) / src.name
        shutil.copy(src, dst)
        start = time.perf_counter()
        papermill.execute_notebook(str(dst), str(dst), cwd=tmp, kernel_name="python3", progress_bar=False,
                                   execution_timeout=300)
        return time.perf_counter() - start


def run(chapters, jobs):
    timings = {}
    with ProcessPoolExecutor(jobs) as pool:  # each chapter runs its own kernel: two at a time on 2 cores
        futures = {pool.submit(run_alone, src): src.stem for src in chapters}
        for future in as_completed(futures):
            timings[futures[future]] = future.result()  # re-raises a chapter's PapermillExecutionError
            print(f"{futures[future]:14s} ran alone in {timings[futures[future]]:5.1f} s", flush=True)
    return timings


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chapters", nargs="*", help="notebook stems (default: every fast chapter)")
    parser.add_argument("--jobs", type=int, default=2, help="chapters run at once")
    args = parser.parse_args(argv)
    check_versions_kept()
    import mtlib

    assert "site-packages" in Path(mtlib.__file__).parts, "mtlib must be the installed package"
    names = args.chapters or sorted(p.stem for p in (ROOT / "book").glob("*.ipynb") if p.stem not in SLOW)
    timings = run([ROOT / "book" / f"{name}.ipynb" for name in names], args.jobs)
    print(f"{len(timings)} chapters, {sum(timings.values()):.0f} s in all, Colab's versions kept")


if __name__ == "__main__":
    main()
