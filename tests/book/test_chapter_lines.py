"""Every public module's ``Chapter:`` line names exactly the chapters that use it.

What "use" means here: a chapter (``book/*.ipynb``, its code cells) uses a public module when it
imports it (``import mtlib.x``, ``from mtlib import x``), imports a name from it, or imports a
name that the module defines through a re-export (``from mtlib import max_pool2d`` uses
``mtlib.maxpool``; ``mtlib.tie_policy`` uses ``mtlib.policy``). A name is credited to the module
that defines it (its ``__module__``), or, for data without one (``TIE_RULES``), to the module it
is imported from. Private modules (``mtlib.maxpool._torch``) follow their public owner
(``mtlib.maxpool``); the package ``mtlib`` itself names no chapter. Use inside mtlib (one module
calling another) does not count: the line says where a reader meets the module.

The line reads ``Chapter: a, b, c.`` (or ``Chapter: none.``), in any order, and may wrap;
whatever follows the first period, semicolon or parenthesis is a free remark.
"""

import functools
import importlib
import pkgutil
import re
import types
from pathlib import Path

import pytest
from helpers import code_cells, mtlib_paths

import mtlib

REPO = Path(__file__).resolve().parents[2]
CHAPTERS = sorted(p.stem for p in (REPO / "book").glob("*.ipynb"))


def public_owner(module: str) -> str:
    """``mtlib.maxpool._torch`` -> ``mtlib.maxpool``; ``mtlib._autodiff`` -> ``mtlib``."""
    parts = module.split(".")
    while any(part.startswith("_") for part in parts):
        parts.pop()
    return ".".join(parts)


def _home(module: str, name: str | None) -> str | None:
    """The module a use ``(module, name)`` credits, or None if it does not resolve."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError:  # ``mtlib.directional.jvp``: an attribute chain, not a module
        parent, _, attr = module.rpartition(".")
        return _home(parent, attr)
    if name is None:
        return mod.__name__
    obj = getattr(mod, name, None)
    if obj is None:
        try:
            return importlib.import_module(f"{module}.{name}").__name__
        except ModuleNotFoundError:
            return None
    if isinstance(obj, types.ModuleType):
        return obj.__name__
    home = getattr(obj, "__module__", None)
    return home if isinstance(home, str) and home.split(".")[0] == "mtlib" else module


@functools.cache
def chapters_using() -> dict[str, set[str]]:
    """Public module -> the chapters whose code cells use it."""
    users: dict[str, set[str]] = {}
    for chapter in CHAPTERS:
        for source in code_cells(REPO / "book" / f"{chapter}.ipynb"):
            for module, name in mtlib_paths(source):
                if (home := _home(module, name)) is not None:
                    users.setdefault(public_owner(home), set()).add(chapter)
    return users


def public_modules() -> list[str]:
    names = (info.name for info in pkgutil.walk_packages(mtlib.__path__, "mtlib."))
    return sorted(n for n in names if public_owner(n) == n and not n.endswith("__main__"))


def chapter_line(module: str) -> set[str]:
    doc = importlib.import_module(module).__doc__ or ""
    found = re.search(r"^Chapter:([^.;(]*)", doc, flags=re.M)
    assert found, f"{module}: the docstring has no line starting with 'Chapter:'"
    names = {name.strip() for name in found.group(1).split(",")}
    if names == {"none"}:
        return set()
    unknown = names - set(CHAPTERS)
    assert not unknown, f"{module}: 'Chapter:' names {sorted(unknown)}, not chapters of book/"
    return names


def test_the_scan_credits_the_defining_module():
    assert _home("mtlib", "tie_policy") == "mtlib.policy"  # a re-export: credited where it is defined
    assert _home("mtlib.ties", "TIE_RULES") == "mtlib.ties"  # data: credited where it is imported from
    assert _home("mtlib", "sweep") == "mtlib.sweep"  # a submodule
    assert _home("mtlib.directional", None) == "mtlib.directional"  # import mtlib.directional
    assert public_owner("mtlib.maxpool._torch") == "mtlib.maxpool" and public_owner("mtlib._x") == "mtlib"
    assert "mtlib" not in public_modules() and "maxpool" in chapters_using()["mtlib.maxpool"]


@pytest.mark.parametrize("module", public_modules())
def test_chapter_line_names_exactly_the_chapters_that_use_it(module):
    used, listed = chapters_using().get(module, set()), chapter_line(module)
    assert listed == used, (f"{module}: 'Chapter:' should name {', '.join(sorted(used)) or 'none'}; "
                            f"missing {sorted(used - listed)}, not using it {sorted(listed - used)}")
