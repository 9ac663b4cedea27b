"""The README opens as a newcomer needs it, and its example runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_api_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    example = next(b for b in blocks if "boustany_f" in b and "tie_policy" in b)
    scope = {}
    exec(compile(example, "README.md", "exec"), scope)
    assert scope["slope"].item() == 0.0
    assert scope["t"].grad.item() == 0.0
    assert scope["x"].grad.tolist() == [0.25] * 4


def test_readme_opens_with_the_project_then_the_two_commands():
    """What the project is, then ``make book`` and ``make test``, then the rest (## sections)."""
    text = README.read_text()
    head, _, rest = text.partition("\n## ")
    title, first, *_ = head.split("\n\n")
    assert title.startswith("# ") and first.startswith("An executable companion to B. Despr")
    commands = re.search(r"```bash\n(.*?)```", head, re.S)
    assert commands and head.index(first) < commands.start(), "the two commands follow the paragraph"
    assert [line.split()[:2] for line in commands.group(1).splitlines() if line.startswith("make")] == [
        ["make", "book"], ["make", "test"]]
    assert "`CONTRIBUTING.md`" in rest.partition("## Layout")[2], "Layout links CONTRIBUTING"


def test_contributing_tree_is_one_line_per_package_and_true():
    """The tree of CONTRIBUTING.md names every package of mtlib on one line of its own and every
    top-level module; each package's docstring, not this tree, lists its files."""
    text = (README.parent / "CONTRIBUTING.md").read_text()
    tree = re.search(r"## Where code goes\n\n```\nmtlib/\n(.*?)```", text, re.S).group(1)
    mtlib = README.parent / "mtlib"
    named = re.findall(r"([\w]+/|[\w]+\.py)", tree)
    for name in named:
        assert (mtlib / name).exists(), f"CONTRIBUTING.md names mtlib/{name}, which does not exist"
    packages = sorted(p.parent.name + "/" for p in mtlib.glob("*/__init__.py"))
    assert sorted(n for n in named if n.endswith("/")) == packages
    lines = tree.splitlines()
    for package in packages:
        line = next(line for line in lines if package in line)
        assert re.findall(r"[\w]+/|[\w]+\.py", line) == [package], f"{package} shares its line"
    assert {p.name for p in mtlib.glob("*.py")} <= {n for n in named if n.endswith(".py")}
