"""The stable surface of mtlib: every public name, every import path the book, the README
and the benchmarks use, the torch.library op names and the sweep command line keep working."""

import ast
import importlib
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import code_cells, mtlib_paths

import mtlib

REPO = Path(__file__).resolve().parents[2]

# Top-level names that chapters, README and readers rely on: none may disappear; a new one needs no
# entry here (a superset check).
TOP_LEVEL = """
AppendixTerms Dual KinkCount KinkReport LowerBound MaxPool1d MaxPool2d Piecewise StridedMaxPool
TangentReport TiePolicy abs_eps abs_shift_eps appendix_example associated_gradient chain_jacobian
check_tangent compare_directional compose_piecewise convergence_table count_kinks directional
exact_lipschitz_1d gradient_disagreement jacobian_norms kinkcheck lower_bound max_first max_last
max_pair_piecewise max_piecewise max_pool1d max_pool2d max_pool_layer_piecewise max_uniform
max_weights network_layers one_sided_difference pool_multiplicity regularized_integrals
relu_layer_piecewise relu_piecewise relu_z tie_fraction tie_policy tie_set upper_bound
window_tie_counts
ld_jvp lexicographic_gradient perturbed_gradient
max_pool3d MaxPool3d adaptive_max_pool1d adaptive_max_pool2d adaptive_max_pool3d
AdaptiveMaxPool1d AdaptiveMaxPool2d AdaptiveMaxPool3d
""".split()

PUBLIC_MODULES = """
mtlib.activations mtlib.appendix mtlib.census mtlib.census.cases mtlib.directional mtlib.examples
mtlib.kinkcheck mtlib.lipschitz mtlib.machine mtlib.maxpool mtlib.networks mtlib.piecewise mtlib.policy
mtlib.representations mtlib.sweep mtlib.sweep.registry mtlib.ties mtlib.training
""".split()


def _sources() -> list[str]:
    """The python sources of the chapters' code cells, the README's code blocks, the benchmarks."""
    out = [source for path in sorted((REPO / "book").glob("*.ipynb")) for source in code_cells(path)]
    readme = (REPO / "README.md").read_text()
    out += re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    out += [path.read_text() for path in sorted((REPO / "benchmarks").glob("*.py"))]
    return out


def _used_paths() -> set[tuple[str, str | None]]:
    """Every (module, name) of mtlib those sources use (:func:`helpers.mtlib_paths`)."""
    return set().union(*map(mtlib_paths, _sources()))


def test_every_top_level_name_is_kept_and_exported():
    assert set(TOP_LEVEL) <= set(mtlib.__all__), sorted(set(TOP_LEVEL) - set(mtlib.__all__))
    assert len(set(mtlib.__all__)) == len(mtlib.__all__)
    for name in mtlib.__all__:
        assert getattr(mtlib, name) is not None


@pytest.mark.parametrize("module", PUBLIC_MODULES)
def test_public_modules_import_and_name_a_chapter(module):
    mod = importlib.import_module(module)
    assert "Chapter:" in (mod.__doc__ or ""), f"{module}: the docstring names no chapter"


def test_the_sources_use_public_paths():
    used = _used_paths()
    assert len(used) > 40  # the scan found the chapters' imports
    for module, name in sorted(used, key=str):
        if module == "mtlib" and name in ("__version__",):
            continue
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError:  # `mtlib.directional.jvp`: the chain ends in an attribute
            parent, _, attr = module.rpartition(".")
            mod = getattr(importlib.import_module(parent), attr)
        if name is not None and not hasattr(mod, name):
            importlib.import_module(f"{module}.{name}")  # a submodule (``from mtlib import sweep``)


def test_names_of_their_own_and_no_registry_in_the_engine():
    """StridedMaxPool is the Lipschitz chapter's name (a VectorMaxPool, stride required), not an alias."""
    # `mtlib.kinkcheck` the attribute is the function; the module is reached by its path
    kinkcheck = importlib.import_module("mtlib.kinkcheck")
    from mtlib import lipschitz, networks, sweep

    importlib.import_module("mtlib.sweep.registry")

    assert not hasattr(kinkcheck, "one_sided")  # removed: the name is left_right_slopes (mtlib._autodiff)
    assert lipschitz.StridedMaxPool is networks.StridedMaxPool
    assert issubclass(networks.StridedMaxPool, networks.VectorMaxPool)
    assert not hasattr(sweep, "SWEEPS")  # the engine does not import its registry (no circle)


def test_sweep_command_line_help():
    done = subprocess.run([sys.executable, "-m", "mtlib.sweep", "--help"], capture_output=True, text=True,
                          check=False, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "usage: python -m mtlib.sweep" in done.stdout


def test_no_private_module_at_the_top_beyond_three():
    private = sorted(p.name for p in (REPO / "mtlib").glob("_*.py") if p.name != "__init__.py")
    assert len(private) <= 3, private


def test_no_module_over_400_lines():
    long = {str(p.relative_to(REPO)): n for p in (REPO / "mtlib").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long


def _import_graph() -> dict[str, set[str]]:
    """Module -> the mtlib modules it imports (at any depth of its code, lazy imports included)."""
    files = {}
    for path in (REPO / "mtlib").rglob("*.py"):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {name: set() for name in files}
    for name, path in files.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mtlib"):
                # `from pkg import sub` needs the submodule `sub`, not the rest of `pkg`
                subs = [f"{node.module}.{a.name}" for a in node.names]
                targets = subs if all(t in files for t in subs) else [node.module, *subs]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module"
                  and node.args and isinstance(node.args[0], ast.Constant)):
                targets = [node.args[0].value]  # importlib.import_module("mtlib..."): lazy, still a use
            else:
                continue
            graph[name] |= {t for t in targets if t in files and t != name}
    return graph


def test_no_import_circle():
    graph, state, circles = _import_graph(), {}, []

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                circles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not circles, circles


def test_the_version_has_one_source():
    """pyproject.toml reads the version from mtlib/__init__.py; the installed metadata agrees."""
    pyproject = (REPO / "pyproject.toml").read_text()
    assert not re.search(r"^version\s*=", pyproject.partition("[project.")[0], re.M)  # none in [project]
    assert re.search(r'^dynamic = \["version"\]', pyproject, re.M)
    assert re.search(r'^version = \{ attr = "mtlib.__version__" \}', pyproject, re.M)
    assert importlib.metadata.version("mtlib") == mtlib.__version__
