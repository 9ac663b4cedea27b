"""Hygiene of the book's notebooks: they are the chapters, the Colab entry points and a test suite."""

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))
MACHINE_PATH = re.compile(r"(/work/|/root/|/home/|/tmp/|[A-Z]:\\\\Users)")


def load(path):
    return json.loads(path.read_text())


def code_cells(nb):
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def test_toc_lists_every_chapter_and_nothing_else():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = {toc["root"]} | {ch["file"] for part in toc["parts"] for ch in part["chapters"]}
    on_disk = {f"book/{p.stem}" for p in NOTEBOOKS} | {"book/references"}
    assert files == on_disk


def test_colab_launch_buttons_configured():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert config["repository"]["url"].startswith("https://github.com/")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_code_cell_installs_mtlib_and_picks_cuda(path):
    nb = load(path)
    first = code_cells(nb)[0]
    source = "".join(first["source"])
    assert "colab-setup" in first["metadata"].get("tags", [])
    assert "except ImportError:" in source
    assert '%pip install -q "mtlib[book] @ git+https://github.com/' in source
    assert 'device = "cuda" if torch.cuda.is_available() else "cpu"' in source
    assert 'print(f"mtlib {mtlib.__version__} {how}; device: {device}")' in source, "say what the set-up did"
    assert "torch.set_default_dtype(torch.float64)" in source and "manual_seed" in source
    assert nb["metadata"]["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_executed_without_errors_or_machine_paths(path):
    nb = load(path)
    cells = code_cells(nb)
    assert all(c["execution_count"] for c in cells), "commit the notebook executed"
    counts = [c["execution_count"] for c in cells]
    assert counts == sorted(counts), "cells were executed out of order"
    for cell in cells:
        for out in cell["outputs"]:
            assert out["output_type"] != "error", f"committed error output: {out.get('ename')}"
            assert out.get("name") != "stderr" or "Warning" not in "".join(out.get("text", ""))
    assert not MACHINE_PATH.search(json.dumps(nb)), "a machine path leaked into the notebook"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_chapter_pins_numbers_with_asserts_and_has_a_title(path):
    nb = load(path)
    assert any(re.search(r"^\s*assert ", "".join(c["source"]), re.M) for c in code_cells(nb))
    first_md = "".join(visible_cells(nb)[0]["source"])
    assert re.match(rf"\({path.stem}\)=\n# ", first_md), "open with a label and a title"


def visible_cells(nb):
    """The cells the book shows: all but the hidden macro cell."""
    return [c for c in nb["cells"] if "remove-cell" not in c["metadata"].get("tags", [])]


CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
MACROS = CONFIG["sphinx"]["config"]["mathjax3_config"]["tex"]["macros"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_macros_are_defined_inside_the_notebook(path):
    """Colab and Jupyter know nothing of _config.yml: a hidden first cell defines the same macros."""
    nb = load(path)
    first = nb["cells"][0]
    assert first["cell_type"] == "markdown" and "remove-cell" in first["metadata"].get("tags", [])
    defined = dict(re.findall(r"\\newcommand\{\\(\w+)\}\{(.*)\}", "".join(first["source"])))
    assert defined == MACROS, "the macro cell must repeat _config.yml's macros exactly"
    used = set(re.findall(r"\\([A-Za-z]+)", "".join("".join(c["source"]) for c in visible_cells(nb)
                                                      if c["cell_type"] == "markdown")))
    assert used & set(MACROS) <= set(defined)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_directives_use_colon_fences_so_jupyter_renders_their_body(path):
    """```{directive} shows as a code block in Colab (math inside stays raw); :::{directive} does not."""
    nb = load(path)
    markdown = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    assert not re.search(r"^\s*```\{", markdown, re.M)


GPU_CHAPTERS = {"maxpool", "training"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_gpu_chapters_ask_colab_for_a_gpu_and_every_header_says_what_a_gpu_changes(path):
    nb = load(path)
    header = "".join(visible_cells(nb)[0]["source"])
    assert re.search(r":::\{admonition\}.*\*\*GPU\.\*\* .*\n:::", header, re.S), "say what a GPU changes"
    timed = re.search(r":::\{admonition\}.*\*\*Time\.\*\* About \d+ s .*\n:::", header, re.S)
    assert timed, "say how long it takes"
    if path.stem in GPU_CHAPTERS:
        assert nb["metadata"]["accelerator"] == "GPU" and nb["metadata"]["colab"]["gpuType"] == "T4"
    else:
        assert "accelerator" not in nb["metadata"]


WITHOUT_CLOSING = {"intro", "results"}  # the front page and the claims table


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_chapter_closes_with_what_it_means_for_training(path):
    """One spelling of the closing section (CONTRIBUTING's 'Adding a chapter', step 6)."""
    nb = load(path)
    headings = [line for cell in nb["cells"] if cell["cell_type"] == "markdown"
                for line in "".join(cell["source"]).splitlines() if line.startswith("## ")]
    closing = [h for h in headings if re.match(r"## What \w+ means for training", h)]
    if path.stem in WITHOUT_CLOSING:
        assert closing == []
    else:
        assert closing == ["## What it means for training"], closing
