"""The census across PyTorch releases: the shipped tables, history, changes, and the live check."""

import pytest
import torch

from mtlib.census import (
    changes,
    check_release,
    compare,
    history,
    nearest_release,
    release_table,
    run,
    shipped_releases,
    to_frame,
    torch_release,
)
from mtlib.census.__main__ import main
from mtlib.census._history import ANSWERS, _read_table

# The rows whose reverse-mode answer torch 2.14 changed (measured on 2.13.0 and 2.14.1).
CHANGED_IN_2_14 = [
    ("torch.clamp(x, 0, 6)", "x = 0", "1", "0"),
    ("torch.clamp(x, 0, 6)", "x = 6", "1", "0"),
    ("torch.clamp_min(x, 0)", "x = 0", "1", "0"),
    ("F.margin_ranking_loss(x, 0, 1)", "x = 0", "-1", "0"),
    ("F.hinge_embedding_loss(x, -1, margin=0)", "x = 0", "-1", "0"),
    ("torch.fmax(x, y)", "x = y = 0", "(1, 0)", "(0.5, 0.5)"),
    ("torch.fmin(x, y)", "x = y = 0", "(1, 0)", "(0.5, 0.5)"),
    ("torch.clamp(x, min=y)", "x = y = 0", "(1, 0)", "(0.5, 0.5)"),
    ("torch.clamp(x, max=y)", "x = y = 0", "(1, 0)", "(0.5, 0.5)"),
    ("torch.clamp_min(x, y)", "x = y = 0", "(1, 0)", "(0.5, 0.5)"),
    ("torch.clamp_max(x, y)", "x = y = 0", "(1, 0)", "(0.5, 0.5)"),
    ("torch.clamp(x, min=y, max=z)", "x = y = 0, z = 1", "(1, 0, 0)", "(0.5, 0.5, 0)"),
]


@pytest.fixture(scope="module")
def live():
    return to_frame(run())


def test_torch_release_and_nearest():
    assert torch_release("2.14.1+cu130") == "2.14.1" and torch_release("2.13.0+cpu") == "2.13.0"
    assert torch_release("2.16.0a0+git1234") == "2.16.0"
    with pytest.raises(ValueError, match="not a torch release"):
        torch_release("nightly")
    assert shipped_releases()[:2] == ("2.13.0", "2.14.1")
    assert [nearest_release(r) for r in ("2.5.0", "2.13.0", "2.13.5", "2.14.1", "2.15.0")] == [
        "2.13.0", "2.13.0", "2.13.0", "2.14.1", "2.14.1"]


def test_each_table_is_a_full_census_of_its_release():
    for release in shipped_releases():
        table = release_table(release)
        assert {torch_release(v) for v in table["torch"]} == {release}  # the version in every row
        assert list(table.columns[:6]) == ["torch", "op", "kink", "variables", "reverse", "forward"]
        assert not table[["op", "kink"]].duplicated().any()
        assert set(table["valid"]) <= {True, False} and set(table["agree"]) <= {True, False, None}
    with pytest.raises(LookupError, match="no census table shipped for torch 2.5.0"):
        release_table("2.5.0")


def test_history_lines_up_the_reverse_answers():
    h = history()
    assert list(h.columns) == ["op", "kink", *shipped_releases()]
    for release in shipped_releases():
        table = release_table(release)
        assert h[release].tolist() == table["reverse"].tolist()
        assert h[["op", "kink"]].values.tolist() == table[["op", "kink"]].values.tolist()
    assert h.set_index(["op", "kink"]).loc[("torch.relu", "x = 0")].tolist()[:2] == ["0", "0"]


def test_changes_between_2_13_and_2_14():
    c = changes()
    assert c[["op", "kink", "2.13.0", "2.14.1"]].values.tolist() == [list(row) for row in CHANGED_IN_2_14]
    assert (c["changed in"] == "2.14.1").all()
    # the clamp family cites the upstream pull request; fmax/fmin were not traced to one
    cited = c.loc[c["upstream"] != "", "op"].tolist()
    assert "torch.fmax(x, y)" not in cited and len(cited) == 10
    assert all(u.startswith("pytorch #191142") for u in c["upstream"] if u)


def test_changes_with_the_installed_census(live):
    c = changes(live)
    installed = live.set_index(["op", "kink"])["reverse"]
    assert c["installed"].tolist() == [installed[op, kink] for op, kink in zip(c["op"], c["kink"])]


def test_live_answers_equal_the_shipped_table_of_this_release(live):
    """Fails if the shipped table of the running torch is not what the census measures on it."""
    release = torch_release()
    if release not in shipped_releases():
        pytest.skip(f"no census table shipped for torch {release}")
    diff = compare(live, release, columns=ANSWERS)
    assert diff.empty, f"regenerate with python -m mtlib.census --csv:\n{diff.to_string()}"


def test_live_verdicts_equal_the_shipped_table_of_this_release(live):
    """The rule and the verdicts too: a change of the judge needs the tables regenerated."""
    release = torch_release()
    if release not in shipped_releases():
        pytest.skip(f"no census table shipped for torch {release}")
    columns = [c for c in release_table(release).columns if c not in ("torch", "op", "kink")]
    assert columns == list(live.columns[2:])
    diff = compare(live, release, columns=columns)
    assert diff.empty, f"regenerate with python -m mtlib.census --csv:\n{diff.to_string()}"


def test_compare_reports_changed_and_missing_rows():
    frame = release_table("2.13.0").drop(columns="torch")
    assert compare(frame, "2.13.0").empty
    frame.loc[frame["op"] == "torch.relu", "reverse"] = "1"
    frame = frame[frame["op"] != "torch.abs"]
    diff = compare(frame, "2.13.0")
    assert diff.values.tolist() == [
        ["torch.relu", "x = 0", "reverse", "0", "1"],
        ["torch.abs", "x = 0", "reverse", "0", None], ["torch.abs", "x = 0", "forward", "0", None]]
    # the 2.13.0 census against the 2.14.1 table: the twelve rows above, reverse and forward
    moved = compare(release_table("2.13.0"), "2.14.1")
    assert sorted(set(zip(moved["op"], moved["kink"]))) == sorted(
        (op, kink) for op, kink, *_ in CHANGED_IN_2_14)


def test_check_release_fails_on_a_shipped_release_and_reports_on_another(capsys):
    assert check_release({("torch.clamp_min(x, 0)", "x = 0"): 1.0,
                          ("torch.fmax(x, y)", "x = y = 0"): ((1.0, 0.0),)}, release="2.13.0").empty
    with pytest.raises(AssertionError, match=r"torch.clamp_min\(x, 0\) at x = 0 \(reverse\): 2.14.1 gives 0"):
        check_release({("torch.clamp_min(x, 0)", "x = 0"): 1.0}, release="2.14.1")
    diff = check_release({("torch.clamp_min(x, 0)", "x = 0"): 1.0, ("torch.relu", "x = 0"): "0"},
                         release="2.16.0")
    assert diff[["op", "shipped", "measured"]].values.tolist() == [["torch.clamp_min(x, 0)", "0", "1"]]
    assert capsys.readouterr().out.startswith(
        "torch 2.16.0 has no shipped census table; differences from torch 2.14.1")
    with pytest.raises(KeyError, match="not rows of the census"):
        check_release({("torch.relu", "x = 1"): 0.0})


def test_the_command_line_writes_the_table_a_release_ships(tmp_path, capsys, live):
    path = tmp_path / "census.csv"
    assert main(["--csv", str(path)]) == 0
    out = capsys.readouterr().out
    written = _read_table(path)
    assert set(written["torch"]) == {torch.__version__}
    assert list(written.columns) == ["torch", *live.columns]
    for column in live.columns:  # None in the frame is NaN or None, depending on pandas
        assert written[column].tolist() == [None if v is None or v != v else v for v in live[column]], column
    assert f"Census of torch {torch.__version__}: {len(live)} kinks" in out
    assert "changed between the shipped releases (2.13.0, 2.14.1): 12" in out
    nearest = nearest_release()
    rows = len(compare(live, nearest)[["op", "kink"]].drop_duplicates())
    assert f": {rows} rows differ" in out
