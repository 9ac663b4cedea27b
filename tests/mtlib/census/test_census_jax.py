"""The census in JAX: pinned findings on jax 0.10.2, the measurement, the judge on JAX's answers."""

import re
import sys
from dataclasses import replace
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import mtlib
import mtlib.census
from mtlib.census import (
    JAX_CASES,
    JAX_GAPS,
    JaxCase,
    by_convention,
    format_jacobian,
    history,
    jax_boustany_f,
    jax_derivative_table,
    jax_maxpool_f,
    jax_relu_formulations,
    releases_side_by_side,
    run,
    shipped_releases,
    side_by_side,
    to_frame,
)
from mtlib.census._jax import jacobians, x64
from mtlib.census.cases import CASES

PAIR = next(c for c in CASES if (c.op, c.kink) == ("torch.maximum(x, y)", "x = y = 0"))


@pytest.fixture(scope="module")
def jax_records():
    return run(framework="jax")


@pytest.fixture(scope="module")
def rec(jax_records):
    return {(r.op, r.kink): r for r in jax_records}


def test_every_census_row_has_a_counterpart_or_a_reason():
    covered = {(c.mirrors.op, c.mirrors.kink) for c in JAX_CASES if c.mirrors is not None}
    gaps = {(c.op, c.kink) for c, _ in JAX_GAPS}
    assert covered | gaps == {(c.op, c.kink) for c in CASES} and not covered & gaps
    assert all(reason for _, reason in JAX_GAPS)
    assert len({(c.op, c.judged.kink) for c in JAX_CASES}) == len(JAX_CASES)  # (op, kink) names a row


def test_each_jax_function_has_its_torch_reference_values():
    """The judge reads the torch reference: it must compute the JAX function, at the kink and around it."""
    rng = np.random.default_rng(0)
    points = [[np.asarray(c.judged.x)] + [np.asarray(c.judged.x) + 0.3 * rng.standard_normal(len(c.judged.x))
                                          for _ in range(3)] for c in JAX_CASES]
    with x64():
        values = jax.jit(lambda ps: [[jnp.ravel(c.f(q)) for q in qs] for c, qs in zip(JAX_CASES, ps)])(points)
    for case, qs, got in zip(JAX_CASES, points, values):
        for q, v in zip(qs, got):
            want = case.judged.f(torch.tensor(q, dtype=torch.float64)).reshape(-1).numpy()
            np.testing.assert_allclose(np.asarray(v), want, rtol=1e-12, atol=1e-12, err_msg=case.op)


def test_same_fields_and_views(jax_records):
    assert len(jax_records) == len(JAX_CASES)
    frame = to_frame(jax_records)
    assert list(frame.columns) == list(to_frame(run(CASES[:1])).columns)
    assert by_convention(frame)["cases"].sum() == len(JAX_CASES)


def test_pinned_jax_rules(rec):
    """The rules the issue lists, measured: JAX differs from PyTorch at each of these kinks."""
    assert rec["jnp.abs", "x = 0"].reverse == ((1.0,),)
    assert rec["jax.nn.hard_tanh", "x = -1"].reverse == rec["jax.nn.hard_tanh", "x = 1"].reverse == ((1.0,),)
    assert rec["jax.nn.leaky_relu(x, 0.1)", "x = 0"].reverse == ((1.0,),)
    assert rec["jnp.clip(x, 0, 6)", "x = 0"].reverse == rec["jnp.clip(x, 0, 6)", "x = 6"].reverse == ((0.5,),)
    assert rec["lax.clamp(0, x, 6)", "x = 0"].reverse == ((0.0,),)
    assert rec["lax.clamp(0, x, 6)", "x = 6"].reverse == ((0.0,),)
    assert rec["jax.nn.relu", "x = 0"].reverse == ((0.0,),)
    assert rec["jnp.maximum(x, 0)", "x = 0"].rule == "mean of the two pieces"
    assert rec["jnp.max(x)", "x = (0, 0, 0)"].rule == "uniform"
    assert rec["lax.reduce_window(max, (2, 2), (2, 2))", "all-zero window"].rule == "first"
    assert rec["lax.cummax(x, 0)", "x = (0, 0, 0)"].reverse[2] == (0.25, 0.25, 0.5)


def test_lax_clamp_with_a_tensor_bound_is_not_associated_on_its_stratum(rec):
    """On {x = y < z} clamp(y, x, z) = x moves with slope 1 along (1, 1, 0); JAX returns (0, 0, 0)."""
    r = rec["lax.clamp(y, x, z)", "x = y = 0, z = 1"]
    assert r.reverse == r.forward == ((0.0, 0.0, 0.0),)
    assert (r.valid, r.clarke) == (False, False)
    assert rec["jnp.clip(x, y, z)", "x = y = 0, z = 1"].valid is True


def test_nans_and_the_judges_verdicts(rec):
    assert all(v != v for v in rec["jnp.linalg.vector_norm(x)", "x = 0"].reverse[0])  # PyTorch: 0
    invalid = {key for key, r in rec.items() if r.valid is not True}
    assert invalid == {("lax.clamp(y, x, z)", "x = y = 0, z = 1"),
                       ("jax.scipy.stats.mode(x)", "x = (0, 0, 0)"), ("jnp.linalg.vector_norm(x)", "x = 0"),
                       ("jax.nn.logsumexp(x)", "x = (-inf, -inf), outside R^n")}
    assert all(r.agree for r in rec.values())  # forward and reverse mode agree on every row


def test_measurement_matches_eager_vjp_and_jvp():
    """The compiled measurement equals eager jax.vjp pull-backs and jax.jvp pushes, ties included."""
    picks = [c for c in JAX_CASES if c.op in {"lax.clamp(y, x, z)", "lax.cummax(x, 0)"}]
    measured = jacobians([(c.f, c.judged.x) for c in picks])
    with x64():
        for case, (rev, fwd) in zip(picks, measured):
            x = jnp.asarray(case.judged.x, dtype=jnp.float64)
            flat = lambda v, f=case.f: jnp.ravel(f(v))  # noqa: E731
            y, pull = jax.vjp(flat, x)
            rows = [np.asarray(pull(e)[0]) for e in np.eye(y.size)]
            cols = [np.asarray(jax.jvp(flat, (x,), (e,))[1]) for e in np.eye(x.size)]
            np.testing.assert_array_equal(rev, np.stack(rows))
            np.testing.assert_array_equal(fwd, np.stack(cols, axis=1))


def test_the_judge_reads_jax_answers_and_can_reject_them():
    """A JAX max with a planted rule (weights (1, 1) at a tie) is judged invalid, not PyTorch's max."""
    @jax.custom_jvp
    def heavy_max(x, y):
        return jnp.maximum(x, y)

    @heavy_max.defjvp
    def _(primals, tangents):
        (x, y), (dx, dy) = primals, tangents
        return jnp.maximum(x, y), jnp.where(x == y, dx + dy, jnp.where(x > y, dx, dy))

    [planted] = run([JaxCase("heavy_max", lambda v: heavy_max(v[:1], v[1:]), PAIR)], framework="jax")
    assert planted.reverse == ((1.0, 1.0),) and (planted.valid, planted.clarke) == (False, False)


def test_x64_does_not_leak():
    before = jnp.zeros(1).dtype
    run(JAX_CASES[:1], framework="jax")
    assert jnp.zeros(1).dtype == before
    with x64():
        assert jnp.zeros(1).dtype == jnp.float64


def test_bad_input():
    with pytest.raises(TypeError, match="JaxCase"):
        run(CASES[:1], framework="jax")
    with pytest.raises(ValueError, match="framework"):
        run(framework="tensorflow")
    with pytest.raises(ValueError, match="mirrors"):
        JaxCase("f", jnp.abs)
    with pytest.raises(ValueError, match="kind"):
        run([JaxCase("f", jnp.abs, reference=replace(CASES[0], kind="nope"))], framework="jax")


def test_only_the_jax_module_imports_jax(monkeypatch):
    root = Path(mtlib.__file__).parent
    importing = {p.relative_to(root).as_posix() for p in root.rglob("*.py")
                 if re.search(r"^\s*(import jax|from jax)", p.read_text(), re.M)}
    assert importing == {"census/_jax.py"}
    monkeypatch.setitem(sys.modules, "jax", None)
    monkeypatch.delitem(sys.modules, "mtlib.census._jax")
    monkeypatch.delattr(mtlib.census, "_jax")
    with pytest.raises(ImportError, match=r"mtlib\[jax\]"):
        run(framework="jax")
    assert run(CASES[:1])[0].reverse == ((0.0,),)  # the PyTorch census needs no jax


def test_tables_2_and_3_in_jax():
    ts = [-1.0, -0.5, -0.01, 0.0, 0.01, 0.5, 1.0]
    assert jax_derivative_table(jax_boustany_f, ts)["f'(t)"].tolist() == [0, 0, 0, -1.5, 0, 0, 0]
    assert jax_derivative_table(jax_maxpool_f, ts)["f'(t)"].tolist() == [0, 0, 0, -3.0, 0, 0, 0]
    x = (0.5, -2.0, 3.25, 1.0)  # f'(0) = x_1 - mean(x), dyadic here so exact
    table = jax_derivative_table(lambda t: jax_boustany_f(t, x), [0.0])
    assert table["f'(t)"].tolist() == [x[0] - sum(x) / 4]
    assert jax_derivative_table(lambda t: jax_maxpool_f(t, 2.0, 0.5), [0.0])["f'(t)"].tolist() == [1.5]


def test_side_by_side_lists_every_row(jax_records):
    torch_records = run()
    table = side_by_side(torch_records, jax_records)
    mirrored = [c for c in JAX_CASES if c.mirrors is not None]
    assert len(table) == len(mirrored) + len(JAX_GAPS)
    assert set(table.loc[table["JAX"] == "-", "gap"]) == {reason for _, reason in JAX_GAPS}
    abs_row = table[(table["PyTorch"] == "torch.abs")].iloc[0]
    assert (abs_row["PyTorch reverse"], abs_row["JAX reverse"], abs_row["same"]) == ("0", "1", False)
    differ = table[table["same"] == False]  # noqa: E712 (None: a gap)
    if torch.__version__.startswith("2.13.0"):
        assert len(differ) == 31


def test_releases_side_by_side_reads_the_shipped_tables(jax_records):
    table = releases_side_by_side(jax_records)
    releases = list(shipped_releases())
    shipped = history().set_index(["op", "kink"])
    answers = {(r.op, r.kink): format_jacobian(r.reverse) for r in jax_records}
    assert len(table) == sum(c.mirrors is not None for c in JAX_CASES)
    for row in table.to_dict("records"):
        assert [row[r] for r in releases] == shipped.loc[(row["PyTorch"], row["kink"]), releases].tolist()
        assert row["differs on"] == ", ".join(r for r in releases if row[r] != row["JAX reverse"])
    by_jax = table.set_index(["JAX", "kink"])
    assert [answers[key] for key in by_jax.index] == by_jax["JAX reverse"].tolist()
    by_jax = by_jax["differs on"]
    assert by_jax["jnp.clip(x, min=y)", "x = y = 0"] == "2.13.0"  # torch 2.14.1 splits the tie as JAX does
    assert by_jax["jnp.abs", "x = 0"] == ", ".join(releases)


def test_jax_relu_formulations_compute_relu():
    with x64():
        x = jnp.array([-2.0, -0.5, 0.0, 0.25, 3.0])
        for name, f in jax_relu_formulations().items():
            np.testing.assert_array_equal(np.asarray(f(x)), np.maximum(np.asarray(x), 0.0), err_msg=name)
