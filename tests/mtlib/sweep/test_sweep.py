"""Tests of mtlib.sweep and its registry: papermill grids, failure reports, the CSV, the command line.

Executors, resuming, killed workers, kernel start-up retries and function sweeps run on a real
Dask LocalCluster of two single-threaded worker processes (no mocks), at the end of this file.
"""

import ast
import json
import os
import sys
import threading
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import torch

from mtlib.sweep import (
    RECORD_MIME,
    RESULTS_DIR,
    _record,
    _store,
    expand_grid,
    load_results,
    map_grid,
    read_records,
    record,
    registry,
    run_sweep,
)
from mtlib.sweep.points import training_point

REPO = Path(__file__).resolve().parents[3]  # the notebooks' paths in the registry start here

TINY_SOURCE = [
    ("parameters", "a = 1.0\nlabel = 'default'"),
    (None, "if a < 0:\n    raise ValueError(f'a must be >= 0, got {a}')"),
    (None, "from mtlib.sweep import record\nrecord(square=a * a, label=label, pair=[a, -a])"),
]


def notebook_of(path, cells):
    """Write a notebook of ``(tag, source)`` code cells with the python3 kernel."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for tag, src in cells:
        cell = nbformat.v4.new_code_cell(src)
        if tag:
            cell.metadata["tags"] = [tag]
        nb.cells.append(cell)
    nbformat.write(nb, str(path))
    return path


def tiny_notebook(path):
    return notebook_of(path, TINY_SOURCE)


@pytest.mark.slow
def test_run_sweep_collects_records_and_reports_a_failing_point(tmp_path, capfd):
    nb = tiny_notebook(tmp_path / "tiny.ipynb")
    out = tmp_path / "out"
    grid = [{"a": 2.0, "label": "two"}, {"a": -1.0, "label": "bad"}, {"a": 3.0, "label": "three"}]
    table = run_sweep(nb, grid, out, jobs=2, progress=False)

    assert table["run"].tolist() == [0, 1, 2]
    assert table["status"].tolist() == ["ok", "failed", "ok"]
    assert table["error"].iloc[1] == "ValueError: a must be >= 0, got -1.0"
    assert table["error"].iloc[0] == "" and table["error"].iloc[2] == ""
    assert table["square"].iloc[0] == 4.0 and table["square"].iloc[2] == 9.0
    assert pd.isna(table["square"].iloc[1])  # the failing run recorded nothing
    assert table["label"].tolist() == ["two", "bad", "three"]
    assert json.loads(table["pair"].iloc[2]) == [3.0, -3.0]
    assert table["notebook"].tolist() == ["tiny-000.ipynb", "tiny-001.ipynb", "tiny-002.ipynb"]
    for name in table["notebook"]:
        assert (out / name).is_file()  # the failed run's notebook is kept too

    csv = pd.read_csv(out / "results.csv", keep_default_na=False)
    assert list(csv.columns) == ["run", "a", "label", "status", "error", "pair", "square", "seconds",
                                 "notebook"]
    assert csv["status"].tolist() == ["ok", "failed", "ok"]
    assert csv["error"].iloc[1] == "ValueError: a must be >= 0, got -1.0"
    assert csv["square"].astype(str).tolist() == ["4.0", "", "9.0"]
    assert (out / "tiny-000.log").is_file()  # the kernels' log lines go here...
    assert "IPKernelApp" not in capfd.readouterr().err  # ...not to the terminal
    assert read_records(out / "tiny-002.ipynb") == {"square": 9.0, "label": "three", "pair": [3.0, -3.0]}


@pytest.mark.slow
def test_cli_runs_a_registered_sweep(tmp_path, monkeypatch, capsys):
    nb = tiny_notebook(tmp_path / "tiny.ipynb")
    monkeypatch.setitem(registry.SWEEPS, "tiny", registry.Sweep(str(nb), {"a": [-5.0]}, "one failing point"))
    csv_path = str(tmp_path / "d" / "t.csv")
    status = registry.main(["tiny", "--jobs", "1", "--out", str(tmp_path / "o"), "--csv", csv_path])
    assert status == 1
    printed = capsys.readouterr().out
    assert "tiny: 1 runs, 0 cached, 1 failed" in printed
    assert "run 0 failed: ValueError: a must be >= 0, got -5.0" in printed
    assert (tmp_path / "o" / "results.csv").is_file()
    assert pd.read_csv(tmp_path / "d" / "t.csv")["status"].tolist() == ["failed"]


def test_cli_rejects_unknown_name(capsys):
    with pytest.raises(SystemExit):
        registry.main(["nonsense"])
    assert "invalid choice: 'nonsense'" in capsys.readouterr().err


def assigned_names(source):
    """Names bound by top-level assignments in a cell's source."""
    names = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        else:
            targets = [node.target] if isinstance(node, ast.AnnAssign) else []
        names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


def test_assigned_names_sees_only_top_level_variables():
    source = "a = 1\nb: int = 2\nx.c = 3\nd[0] = 4\nif a:\n    e = 5\nf_g = 6"
    assert assigned_names(source) == {"a", "b", "f_g"}


@pytest.mark.parametrize("name", sorted(registry.SWEEPS))
def test_registered_sweep_varies_parameters_of_its_notebook(name):
    sw = registry.SWEEPS[name]
    nb = nbformat.read(str(REPO / sw.notebook), as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    parameters = assigned_names(tagged[0].source)
    for point in expand_grid(sw.grid):
        assert set(point) <= parameters, set(point) - parameters
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert sw.description


@pytest.mark.parametrize("name", sorted(registry.SWEEPS))
def test_registered_sweep_has_its_table_in_the_package(name):
    """mtlib/sweep/results/NAME.csv (package data, read by the sweeps chapter) is a complete,
    successful run of the grid."""
    points = expand_grid(registry.SWEEPS[name].grid)
    table = load_results(name)
    assert (RESULTS_DIR / f"{name}.csv").is_file()
    assert table["run"].tolist() == list(range(len(points)))
    assert (table["status"] == "ok").all()
    for key in points[0]:
        stored = [json.loads(v) if isinstance(v, str) and v[:1] == "[" else v for v in table[key]]
        assert stored == [point[key] for point in points], key


def test_training_sweep_grid():
    points = expand_grid(registry.SWEEPS["training"].grid)
    assert [p["batch_size"] for p in points] == [8, 32, 128]
    assert [p["lr"] for p in points] == [0.0125, 0.05, 0.2]  # proportional to the batch size
    assert all(p["seeds"] == [0] for p in points)


# --- grids ---------------------------------------------------------------------------------------


def test_expand_grid_cartesian_product_and_lists():
    assert expand_grid({"a": [1, 2], "b": ["x", "y"]}) == [
        {"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 2, "b": "x"}, {"a": 2, "b": "y"},
    ]
    points = [{"x": [1.0, 2.0]}, {"x": [3.0]}]
    assert expand_grid(points) == points
    assert expand_grid(points) is not points


@pytest.mark.parametrize(
    "grid, exc, match",
    [
        ({"a": 3}, TypeError, r"`grid\['a'\]` must be a list of values"),
        ([{"a": 1}, 2], TypeError, r"`grid\[1\]` must be a dict"),
        ("a=1", TypeError, "`grid` must be a list of dicts or a dict of lists"),
        ([], ValueError, "`grid` must hold at least one point"),
        ({"a": []}, ValueError, "`grid` must hold at least one point"),
    ],
)
def test_expand_grid_errors(grid, exc, match):
    with pytest.raises(exc, match=match):
        expand_grid(grid)


def test_run_sweep_argument_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="run_sweep: `notebook`"):
        run_sweep(tmp_path / "missing.ipynb", [{"a": 1}], tmp_path)
    nb = tiny_notebook(tmp_path / "tiny.ipynb")
    with pytest.raises(ValueError, match="run_sweep: `jobs` must be >= 1, got 0"):
        run_sweep(nb, [{"a": 1}], tmp_path, jobs=0)
    for jobs in (1.5, True):
        with pytest.raises(TypeError, match="run_sweep: `jobs` must be an int"):
            run_sweep(nb, [{"a": 1}], tmp_path, jobs=jobs)
    with pytest.raises(ValueError, match="run_sweep: `retries` must be >= 0, got -1"):
        run_sweep(nb, [{"a": 1}], tmp_path, retries=-1)
    with pytest.raises(ValueError, match="run_sweep: `retries` must be >= 0, got -1"):
        run_sweep(nb, [{"a": 1}], tmp_path, retries=-1)


# --- record --------------------------------------------------------------------------------------


def test_record_outside_ipython_is_a_no_op():
    assert record(a=1, b=torch.tensor([0.5, 1.0]), c=float("nan")) is None


def test_record_values_are_made_json():
    assert _record._jsonable("t", torch.tensor(2.5)) == 2.5
    assert _record._jsonable("t", torch.tensor([1, 2])) == [1, 2]
    assert _record._jsonable("n", float("inf")) is None
    assert _record._jsonable("b", True) is True
    assert _record._jsonable("l", (1, [2.0, None])) == [1, [2.0, None]]


def test_record_rejects_other_types():
    with pytest.raises(TypeError, match="record: `thing` must be a number"):
        record(thing={"a": 1})
    for name in ("run", "status", "error", "seconds", "notebook"):
        with pytest.raises(ValueError, match=f"record: `{name}` is a column that run_sweep writes itself"):
            record(**{name: 1.0})


def test_read_records_merges_outputs(tmp_path):
    nb = nbformat.v4.new_notebook()
    outs = [
        nbformat.v4.new_output("display_data", data={RECORD_MIME: {"a": 1, "b": 2}}),
        nbformat.v4.new_output("stream", name="stdout", text="hello"),
    ]
    nb.cells += [
        nbformat.v4.new_code_cell("", outputs=outs),
        nbformat.v4.new_markdown_cell("text"),
        nbformat.v4.new_code_cell(
            "", outputs=[nbformat.v4.new_output("display_data", data={RECORD_MIME: {"b": 3}})]),
    ]
    nbformat.write(nb, str(tmp_path / "r.ipynb"))
    assert read_records(tmp_path / "r.ipynb") == {"a": 1, "b": 3}



def test_cli_help_names_the_executors(capsys):
    # `python -m mtlib.sweep --help` in a subprocess: tests/test_api.py::test_sweep_command_line_help
    with pytest.raises(SystemExit) as done:
        registry.main(["--help"])
    assert done.value.code == 0
    printed = capsys.readouterr().out
    assert "{" + ",".join(sorted(registry.SWEEPS)) + "}" in printed and "training" in registry.SWEEPS
    for option in ("--scheduler ADDRESS", "--local-cluster N", "--function", "--retries"):
        assert option in printed


def test_cli_asks_for_the_repository_root(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no book/ here: the notebook form cannot find its chapter
    with pytest.raises(SystemExit) as done:
        registry.main(["boustany", "--jobs", "1", "--out", str(tmp_path / "o")])
    assert done.value.code == 2
    assert "book/boustany.ipynb not found: run from the repository root" in capsys.readouterr().err


def test_cli_refuses_a_function_form_that_does_not_exist(capsys):
    with pytest.raises(SystemExit):
        registry.main(["boustany", "--function"])
    assert "sweep 'boustany' has no function form" in capsys.readouterr().err


# --- what is kept on disk ------------------------------------------------------------------------


def test_cached_result_trusts_only_a_finished_point_of_the_same_notebook_and_parameters(tmp_path):
    output = tmp_path / "nb-000.ipynb"
    result = {"status": "ok", "error": "", "values": {"square": 4.0}, "seconds": 1.5}
    assert _store.cached_result(output, "abc", {"a": 2.0}) is None  # nothing yet
    output.write_text("{}")
    assert _store.cached_result(output, "abc", {"a": 2.0}) is None  # a notebook without its record
    _store.store_result(output, "abc", {"a": 2.0, "b": [1]}, result)
    assert _store.cached_result(output, "abc", {"b": [1], "a": 2.0}) == {**result, "status": "cached"}
    assert _store.cached_result(output, "abd", {"a": 2.0, "b": [1]}) is None  # the notebook changed
    assert _store.cached_result(output, "abc", {"a": 3.0, "b": [1]}) is None  # other parameters
    _store.store_result(output, "abc", {"a": 2.0, "b": [1]}, {**result, "status": "failed", "error": "E: x"})
    assert _store.cached_result(output, "abc", {"a": 2.0, "b": [1]}) is None  # failed: run it again
    output.with_suffix(".json").write_text('{"status": "ok", "notebook_sha')  # cut short: not trusted
    assert _store.cached_result(output, "abc", {"a": 2.0, "b": [1]}) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nb-000.ipynb", "nb-000.json"]  # no temporaries


def test_csv_is_written_atomically(tmp_path):
    path = tmp_path / "sub" / "t.csv"
    _store.write_csv_atomic(pd.DataFrame({"a": [1, 2]}), path)
    assert path.read_text() == "a\n1\n2\n"
    assert [p.name for p in path.parent.iterdir()] == ["t.csv"]
    assert _store.temporary_path(path).parent == path.parent and _store.temporary_path(path).suffix == ".csv"


def test_load_results_names_the_shipped_tables():
    with pytest.raises(FileNotFoundError, match=r"no sweep table 'nope'; shipped: \['boustany'"):
        load_results("nope")


# --- executors: a real Dask LocalCluster of worker processes -----------------------------------

# A notebook that does not import mtlib (its kernel starts in about a second): it appends a line
# to marks/<a>.txt each time it runs (the execution count), kills the process that runs it the
# first time when `kill` is set (the kernel's parent is the sweep worker), refuses a < 0, and
# records a^2 with the MIME type of mtlib.sweep.record.
LIGHT_SOURCE = [
    ("parameters", "a = 1.0\nmarks = '.'\nkill = False"),
    (None, "import os, signal\n"
           "with open(os.path.join(marks, f'{a}.txt'), 'a') as f:\n"
           "    f.write('run\\n')\n"
           "flag = os.path.join(marks, f'{a}.killed')\n"
           "if kill and not os.path.exists(flag):\n"
           "    open(flag, 'w').close()\n"
           "    os.kill(os.getppid(), signal.SIGKILL)"),
    (None, "if a < 0:\n    raise ValueError(f'a must be >= 0, got {a}')"),
    (None, "from IPython.display import display\n"
           f"display({{{RECORD_MIME!r}: {{'square': a * a}}, 'text/plain': 'recorded'}}, raw=True)"),
]

# A kernel whose first FAILS launches lose the start-up race for real: the script holds the shell
# port that jupyter_client picked before ipykernel binds it ("Address already in use").
FLAKY_KERNEL = """
import json, os, socket, sys
here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "launches.txt"), "a+") as f:
    f.seek(0)
    earlier = len(f.read().splitlines())
    f.write("launch\\n")
with open(os.path.join(here, "fails.txt")) as f:
    fails = int(f.read())
if earlier < fails:
    info = json.load(open(sys.argv[sys.argv.index("-f") + 1]))
    held = socket.socket()
    held.bind((info["ip"], info["shell_port"]))
    held.listen()
from ipykernel.kernelapp import launch_new_instance
launch_new_instance()
"""


def light_notebook(path):
    return notebook_of(path, LIGHT_SOURCE)


def runs_of(marks, a) -> int:
    path = Path(marks) / f"{a}.txt"
    return len(path.read_text().splitlines()) if path.exists() else 0


def marked_point(a, marks, crash=False):
    """A point function for map_grid: counts its runs, dies once if `crash`, refuses a < 0."""
    with open(Path(marks) / f"{a}.txt", "a") as f:
        f.write("run\n")
    flag = Path(marks) / f"{a}.crashed"
    if crash and not flag.exists():
        flag.touch()
        os._exit(3)  # the worker process dies mid-task
    if a < 0:
        raise ValueError(f"a must be >= 0, got {a}")
    return {"square": a * a, "pid": os.getpid()}


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    """Two single-threaded worker processes. allowed-failures 0: a task whose worker dies fails at
    once (KilledWorker) instead of being moved to another worker, so a kill interrupts the sweep.
    Workers inherit JUPYTER_PATH, where the flaky kernelspec lives."""
    dask = pytest.importorskip("dask")
    distributed = pytest.importorskip("distributed")
    kernels = tmp_path_factory.mktemp("jupyter")
    spec = kernels / "kernels" / "flaky"
    spec.mkdir(parents=True)
    (spec / "flaky_kernel.py").write_text(FLAKY_KERNEL)
    (spec / "fails.txt").write_text("0")
    argv = [sys.executable, str(spec / "flaky_kernel.py"), "-f", "{connection_file}"]
    kernel = {"argv": argv, "display_name": "flaky", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(kernel))
    saved = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(kernels), saved]))
    try:
        with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
                distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                         dashboard_address=":0") as cluster, \
                distributed.Client(cluster) as client:
            yield client, spec
    finally:
        if saved is None:
            os.environ.pop("JUPYTER_PATH", None)
        else:
            os.environ["JUPYTER_PATH"] = saved


@pytest.mark.slow
def test_notebook_sweep_on_dask_resumes_after_a_killed_worker(tmp_path, dask_cluster):
    client, _ = dask_cluster
    nb = light_notebook(tmp_path / "light.ipynb")
    marks = tmp_path / "marks"
    marks.mkdir()
    out = tmp_path / "out"
    grid = [{"a": a, "marks": str(marks), "kill": a == 2.0} for a in (1.0, 2.0, -1.0, 3.0)]

    first = run_sweep(nb, grid, out, executor=client.get_executor(), progress=False)
    assert first.loc[1, "status"] == "failed" and "KilledWorker" in first.loc[1, "error"]
    assert first.loc[2, ["status", "error"]].tolist() == ["failed", "ValueError: a must be >= 0, got -1.0"]
    assert len(list(out.glob(".light-001.*.tmp.ipynb"))) == 1  # the killed run's notebook, never renamed
    # "cached": Dask recomputes a result lost with its worker; the worker finds the point on disk
    finished = first.index[first["status"].isin(["ok", "cached"])].tolist()
    assert finished  # the other worker went on
    for i in finished:
        assert runs_of(marks, grid[i]["a"]) == 1 and first.loc[i, "square"] == grid[i]["a"] ** 2
    for i in set(first.index) - set(finished) - {2}:  # the killed point, and any sent to the dead worker
        assert "KilledWorker" in first.loc[i, "error"]
        assert runs_of(marks, grid[i]["a"]) <= 1

    second = run_sweep(nb, grid, out, executor=client.get_executor(), progress=False)
    assert second["status"].tolist() == [
        "cached" if i in finished else "failed" if i == 2 else "ok" for i in range(len(grid))
    ]
    for i in finished:  # nothing that had finished ran again
        assert runs_of(marks, grid[i]["a"]) == 1
    assert runs_of(marks, 2.0) == 2  # the killed point ran to the end this time
    assert runs_of(marks, -1.0) == 2  # a failed point is retried on the next run
    assert second["square"].tolist()[:2] == [1.0, 4.0] and second["square"].tolist()[3:] == [9.0]
    assert (second["seconds"][finished] == first["seconds"][finished]).all()  # the stored run's time
    csv = pd.read_csv(out / "results.csv", keep_default_na=False)
    assert csv["status"].tolist() == second["status"].tolist()
    kept = sorted(f"light-{i:03d}{ext}" for i in range(4) for ext in (".ipynb", ".json", ".log"))
    assert sorted(p.name for p in out.iterdir()) == [*kept, "results.csv"]  # no temporary file left


@pytest.mark.slow
def test_kernel_start_up_race_is_retried(tmp_path, dask_cluster):
    client, spec = dask_cluster
    nb = light_notebook(tmp_path / "light.ipynb")
    point = [{"a": 3.0, "marks": str(tmp_path)}]
    (spec / "fails.txt").write_text("1")
    (spec / "launches.txt").unlink(missing_ok=True)
    table = run_sweep(nb, point, tmp_path / "o1", executor=client.get_executor(), retries=1,
                      kernel_name="flaky", progress=False)
    assert table["status"].tolist() == ["ok"] and table["square"].tolist() == [9.0]
    assert len((spec / "launches.txt").read_text().splitlines()) == 2
    assert "Address already in use" in (tmp_path / "o1" / "light-000.log").read_text()

    (spec / "launches.txt").unlink()
    table = run_sweep(nb, point, tmp_path / "o0", executor=client.get_executor(), retries=0,
                      kernel_name="flaky", progress=False)
    assert table["status"].tolist() == ["failed"]
    assert "Kernel died before replying to kernel_info" in table["error"].iloc[0]
    assert len((spec / "launches.txt").read_text().splitlines()) == 1


@pytest.mark.slow
def test_function_sweep_on_dask_reports_failures_and_a_dead_worker(tmp_path, dask_cluster):
    client, _ = dask_cluster
    grid = [{"a": a, "marks": str(tmp_path), "crash": a == 5} for a in (1, -1, 5, 2, 3)]
    table = map_grid(marked_point, grid, executor=client.get_executor(), progress=False)
    columns = ["run", "a", "marks", "crash", "status", "error", "pid", "square", "seconds"]
    assert list(table.columns) == columns
    assert table.loc[1, ["status", "error"]].tolist() == ["failed", "ValueError: a must be >= 0, got -1"]
    assert table.loc[2, "status"] == "failed" and "KilledWorker" in table.loc[2, "error"]
    ok = table[table["status"] == "ok"]
    assert len(ok) >= 2 and (ok["square"] == ok["a"] ** 2).all()
    assert not (ok["pid"] == os.getpid()).any()  # ran in the worker processes
    # no runs count here: map_grid keeps nothing on disk, and Dask reruns a finished point whose
    # result died with its worker before the client fetched it (run_sweep's cache makes that a no-op)
    again = map_grid(marked_point, grid, executor=client.get_executor(), progress=False)
    assert again["status"].tolist() == ["ok", "failed", "ok", "ok", "ok"]  # the crash happens once


@pytest.mark.slow
def test_function_sweep_on_the_local_pool(tmp_path):
    grid = {"a": [2, -1], "marks": [str(tmp_path)]}
    table = map_grid(marked_point, grid, jobs=1, progress=False)
    assert table["status"].tolist() == ["ok", "failed"]
    assert table["square"].iloc[0] == 4 and table["error"].iloc[1] == "ValueError: a must be >= 0, got -1"
    assert table["pid"].iloc[0] != os.getpid()
    with pytest.raises(TypeError, match="map_grid: `jobs` must be an int"):
        map_grid(marked_point, grid, jobs=1.0)


@pytest.mark.slow
def test_cli_runs_both_forms_on_a_dask_scheduler(tmp_path, dask_cluster, monkeypatch, capsys):
    client, _ = dask_cluster
    nb = light_notebook(tmp_path / "light.ipynb")
    grid = {"a": [2.0], "marks": [str(tmp_path)]}
    monkeypatch.setitem(registry.SWEEPS, "light", registry.Sweep(str(nb), grid, "one point", marked_point))
    address = client.scheduler.address
    assert registry.main(["light", "--scheduler", address, "--out", str(tmp_path / "nb")]) == 0
    assert registry.main(["light", "--scheduler", address, "--out", str(tmp_path / "nb")]) == 0
    assert registry.main(["light", "--scheduler", address, "--function", "--out", str(tmp_path / "fn")]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert [line.split(", ")[:3] for line in printed] == [
        ["light: 1 runs", "0 cached", "0 failed"], ["light: 1 runs", "1 cached", "0 failed"],
        ["light: 1 runs", "0 cached", "0 failed"],
    ]
    assert runs_of(tmp_path, 2.0) == 2  # the notebook once (then cached), the function once
    assert pd.read_csv(tmp_path / "fn" / "results.csv")["square"].tolist() == [4.0]


# The smallest training point at which the chapter's own asserts hold (they need about 40 float16
# rounding ties, hence 40 minibatches of 32 images, and a trained network above 50 % accuracy).
TRAINING_POINT = {"seeds": [0], "calibration_seeds": [1], "epochs": 1}


@pytest.mark.slow
def test_training_sweep_function_form_records_what_the_notebook_records(tmp_path, dask_cluster):
    """The notebook on one worker, its function form on the other, at the same time."""
    client, _ = dask_cluster
    functional = {}
    thread = threading.Thread(target=lambda: functional.update(
        table=map_grid(training_point, [TRAINING_POINT], executor=client.get_executor(), progress=False)))
    thread.start()
    notebook = REPO / registry.SWEEPS["training"].notebook
    by_notebook = run_sweep(notebook, [TRAINING_POINT], tmp_path, executor=client.get_executor(),
                            progress=False)
    thread.join()
    by_function = functional["table"]
    assert by_notebook["status"].tolist() == ["ok"], by_notebook["error"].iloc[0]
    assert by_function["status"].tolist() == ["ok"], by_function["error"].iloc[0]
    recorded = read_records(tmp_path / by_notebook["notebook"].iloc[0])
    returned = by_function.drop(columns=["run", *TRAINING_POINT, "status", "error", "seconds"]).iloc[0]
    assert sorted(returned.index) == sorted(recorded)
    for name, value in recorded.items():
        assert (value is None and pd.isna(returned[name])) or returned[name] == value, name
    assert registry.SWEEPS["training"].function is training_point
