"""The extension checklists, executed: what a contributor forgets shows up in red.

* A tie rule: every comparison with a tie rule in ``mtlib`` (found with ``ast``) sits in a file
  that the checklist of :mod:`mtlib.ties` names, and every file the checklist names exists.
  (The tests themselves run each rule of ``TIE_RULES`` through the ``tie_rule`` fixture.)
* A nonsmooth op: the ops that ``tie_policy`` rules (``mtlib.policy._HANDLERS``), the ops with a
  directional rule at their kinks (``mtlib/directional/_kinks.py`` and ``_pools.py``) and the ops
  the census judges (``mtlib.census.cases.CASES``) are the same, up to the differences listed
  below, each with its reason. In-place variants (``relu_``), ``*_with_indices`` and aliases
  (``absolute``, ``clip``) count as their op.
"""

import ast
import re
from pathlib import Path

import mtlib.directional  # noqa: F401  (registers the directional rules)
import mtlib.ties
from mtlib.census.cases import CASES
from mtlib.directional._dual import RULES
from mtlib.policy import _HANDLERS
from mtlib.ties import TIE_RULES

REPO = Path(__file__).resolve().parents[2]
MTLIB = REPO / "mtlib"
RULE_NAMES = {"ties", "rule", "RULE"}  # what the code calls a tie rule (RULE: the Triton code)


def _names_a_rule(node) -> bool:
    """A variable holding a tie rule: ``ties``, ``args.ties``, ``rule``, ``RULE``."""
    return (isinstance(node, ast.Name) and node.id in RULE_NAMES
            or isinstance(node, ast.Attribute) and node.attr in RULE_NAMES)


def _is_a_value(node) -> bool:
    """What a rule is compared with: a constant other than None (``"first"``, ``2``), a named
    constant (``UNIFORM``, ``TIE_RULES``) or a collection of them."""
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return all(_is_a_value(e) for e in node.elts)
    return (isinstance(node, ast.Constant) and node.value is not None
            or isinstance(node, ast.Name) and node.id.isupper())


def _is_rule_name(node) -> bool:
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_is_rule_name(e) for e in node.elts)
    return isinstance(node, ast.Constant) and node.value in TIE_RULES


def branches_on_a_tie_rule(source: str) -> list[int]:
    """Lines of the comparisons ``ties == "uniform"``, ``args.ties != "first"``, ``rule in
    ("last",)``, ``RULE == 2``, ``x == "uniform"``: a variable holding a tie rule compared with a
    value, or anything compared with a rule's name."""
    lines = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            sides = (node.left, *node.comparators)
            if (any(map(_is_rule_name, sides))
                    or any(map(_names_a_rule, sides)) and any(map(_is_a_value, sides))):
                lines.add(node.lineno)
    return sorted(lines)


def _checklist() -> str:
    doc = mtlib.ties.__doc__
    return doc[doc.index("Adding a tie rule"):doc.index("Chapter:")]


def test_the_finder_sees_each_form_of_branch():
    source = ('a = ties == "uniform"\nif args.ties != "first": pass\nb = rule in ("last",)\n'
              'if RULE == UNIFORM: pass\nc = "last" if x == "last" else 0\n')
    assert branches_on_a_tie_rule(source) == [1, 2, 3, 4, 5]
    others = 'for rule in TIE_RULES: x = {rule: 1}\nif mode == "max": pass\nif rule is None: pass\n'
    assert branches_on_a_tie_rule(others) == []


def test_every_tie_rule_branch_is_in_the_ties_checklist():
    checklist = _checklist()
    branching = {str(p.relative_to(MTLIB)): lines for p in sorted(MTLIB.rglob("*.py"))
                 if (lines := branches_on_a_tie_rule(p.read_text()))}
    assert "ties.py" in branching and "policy/_ops.py" in branching  # the finder works here
    missing = {path: lines for path, lines in branching.items() if f"``{path}``" not in checklist}
    assert not missing, f"branches on a tie rule in files the checklist of mtlib/ties.py omits: {missing}"


def test_every_file_the_checklist_names_exists():
    named = re.findall(r"``([\w/]+\.py)``", _checklist())
    assert len(named) >= 8
    for path in named:
        assert (REPO / path).is_file() or (MTLIB / path).is_file(), f"mtlib/ties.py names a missing {path}"


# --- the ops that policy, directional and census cover -------------------------------------------

ALIASES = {"absolute": "abs", "clip": "clamp"}


def _op(name: str) -> str:
    name = name.split(".")[0].strip("_").removesuffix("_with_indices").rstrip("_")
    return ALIASES.get(name, name)


def policy_ops() -> set[str]:
    return {_op(f.__name__) for f in _HANDLERS}


def directional_kink_ops() -> set[str]:
    kinks = ("mtlib.directional._kinks", "mtlib.directional._pools")
    return {_op(getattr(f, "__name__", str(f))) for f, rule in RULES.items() if rule.__module__ in kinks}


def census_ops(kinds=None) -> set[str]:
    """The op of each case, ``"torch.linalg.vector_norm(x, 1)"`` -> ``"vector_norm"``."""
    return {_op(re.match(r"[\w.]*?(\w+)(?:\(|$)", case.op).group(1)) for case in CASES
            if kinds is None or case.kind in kinds}


# Intended differences, each with its reason. A new op in one place and not the others fails the
# tests below until it is added to the others or listed here.
DIRECTIONAL_NOT_POLICY = {
    "argmax": "an integer result: no derivative for a tie rule to choose; the dual says which entry wins",
    "argmin": "an integer result: no derivative for a tie rule to choose; the dual says which entry wins",
    "leaky_relu": "max(x, a x) with PyTorch's slope a at 0, already in Clarke's gradient: not ruled",
    "max_pool_ties": "mtlib's own pool operator, which tie_policy reaches through F.max_poolNd",
}
NOT_IN_CENSUS = {
    "adaptive_max_pool3d": "the window rule of the 1-d and 2-d adaptive pools, which the census judges",
    "argmax": "an integer result: the census judges derivatives",
    "argmin": "an integer result: the census judges derivatives",
    "max_pool_ties": "mtlib's own operator: the census judges PyTorch's ops",
}
# The census surveys PyTorch's nonsmooth ops; tie_policy rules those that are a max or a min of an
# ordered list of candidates behind one of its functions.
CENSUS_TIES_NOT_POLICY = {
    "cummax": "a running max, returned with its indices; not intercepted",
    "cummin": "a running min, returned with its indices; not intercepted",
    "embedding_bag": "a max over bags of embedding rows inside an embedding lookup; not intercepted",
    "fmax": "the NaN-ignoring maximum; not intercepted",
    "fmin": "the NaN-ignoring minimum; not intercepted",
    "fractional_max_pool2d": "windows drawn at random; not intercepted",
    "kthvalue": "an order statistic other than max and min: no tie rule of TIE_RULES applies",
    "logsumexp": "smooth: the census's control case",
    "median": "an order statistic other than max and min: no tie rule of TIE_RULES applies",
    "mode": "not locally Lipschitz: outside the theory",
    "quantile": "an interpolated order statistic: no tie rule of TIE_RULES applies",
    "scatter_reduce": "a max over scattered groups; not intercepted",
    "sort": "all order statistics at once: no tie rule of TIE_RULES applies",
    "topk": "the k largest: order statistics, no tie rule of TIE_RULES applies",
    "vector_norm": "the inf-norm is a max of |x_i| inside a norm; not intercepted",
}


def test_policy_and_directional_rule_the_same_ops():
    policy, directional = policy_ops(), directional_kink_ops()
    assert len(policy) >= 15
    assert policy - directional == set(), "ops tie_policy rules without a directional rule"
    assert directional - policy == set(DIRECTIONAL_NOT_POLICY)


def test_the_census_judges_every_ruled_op():
    census = census_ops()
    assert (policy_ops() | directional_kink_ops()) - census == set(NOT_IN_CENSUS)


def test_every_census_op_with_ties_is_ruled_or_listed():
    ties = census_ops(kinds=("ties", "windows"))
    assert len(ties) >= 20
    assert ties - policy_ops() == set(CENSUS_TIES_NOT_POLICY)
