"""The README's example runs as written."""

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
