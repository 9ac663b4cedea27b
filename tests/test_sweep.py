"""Tests of mtlib.sweep and mtlib.sweeps: papermill grids, failure reports, the CSV, the command line."""

import ast
import json
import subprocess
import sys

import nbformat
import pandas as pd
import pytest
import torch

from mtlib import sweep, sweeps
from mtlib.sweep import RECORD_MIME, expand_grid, read_records, record, registry, run_sweep

TINY_SOURCE = [
    ("parameters", "a = 1.0\nlabel = 'default'"),
    (None, "if a < 0:\n    raise ValueError(f'a must be >= 0, got {a}')"),
    (None, "from mtlib.sweep import record\nrecord(square=a * a, label=label, pair=[a, -a])"),
]


def tiny_notebook(path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for tag, src in TINY_SOURCE:
        cell = nbformat.v4.new_code_cell(src)
        if tag:
            cell.metadata["tags"] = [tag]
        nb.cells.append(cell)
    nbformat.write(nb, str(path))
    return path


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


def test_cli_runs_a_registered_sweep(tmp_path, monkeypatch, capsys):
    nb = tiny_notebook(tmp_path / "tiny.ipynb")
    monkeypatch.setitem(sweeps.SWEEPS, "tiny", sweeps.Sweep(str(nb), {"a": [-5.0]}, "one failing point"))
    csv_path = str(tmp_path / "d" / "t.csv")
    status = sweeps.main(["tiny", "--jobs", "1", "--out", str(tmp_path / "o"), "--csv", csv_path])
    assert status == 1
    printed = capsys.readouterr().out
    assert "tiny: 1 runs, 1 failed" in printed
    assert "run 0 failed: ValueError: a must be >= 0, got -5.0" in printed
    assert (tmp_path / "o" / "results.csv").is_file()
    assert pd.read_csv(tmp_path / "d" / "t.csv")["status"].tolist() == ["failed"]


def test_cli_rejects_unknown_name(capsys):
    with pytest.raises(SystemExit):
        sweeps.main(["nonsense"])
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


@pytest.mark.parametrize("name", sorted(sweeps.SWEEPS))
def test_registered_sweep_varies_parameters_of_its_notebook(name):
    sw = sweeps.SWEEPS[name]
    nb = nbformat.read(str(registry._REPO / sw.notebook), as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    parameters = assigned_names(tagged[0].source)
    for point in expand_grid(sw.grid):
        assert set(point) <= parameters, set(point) - parameters
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert sw.description


@pytest.mark.parametrize("name", sorted(sweeps.SWEEPS))
def test_registered_sweep_has_its_table_in_the_book(name):
    """book/data/sweep_NAME.csv (read by the sweeps chapter) is a complete, successful run of the grid."""
    points = expand_grid(sweeps.SWEEPS[name].grid)
    table = pd.read_csv(registry._REPO / "book" / "data" / f"sweep_{name}.csv")
    assert table["run"].tolist() == list(range(len(points)))
    assert (table["status"] == "ok").all()
    for key in points[0]:
        stored = [json.loads(v) if isinstance(v, str) and v[:1] == "[" else v for v in table[key]]
        assert stored == [point[key] for point in points], key


def test_training_sweep_grid():
    points = expand_grid(sweeps.SWEEPS["training"].grid)
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


# --- record --------------------------------------------------------------------------------------


def test_record_outside_ipython_is_a_no_op():
    assert record(a=1, b=torch.tensor([0.5, 1.0]), c=float("nan")) is None


def test_record_values_are_made_json():
    assert sweep._jsonable("t", torch.tensor(2.5)) == 2.5
    assert sweep._jsonable("t", torch.tensor([1, 2])) == [1, 2]
    assert sweep._jsonable("n", float("inf")) is None
    assert sweep._jsonable("b", True) is True
    assert sweep._jsonable("l", (1, [2.0, None])) == [1, [2.0, None]]


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



def test_python_dash_m_entry_point():
    done = subprocess.run([sys.executable, "-m", "mtlib.sweep", "--help"], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0
    assert "{boustany,stampacchia,training}" in done.stdout
