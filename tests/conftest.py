"""Fixtures shared by the whole suite; helpers shared as code live in ``tests/helpers.py``.

``tie_rule`` runs a test once per rule of :data:`mtlib.ties.TIE_RULES`, so a rule added there is
tested everywhere at once (and shows up in red wherever it is half done)."""

from __future__ import annotations

import pytest

from mtlib.ties import TIE_RULES


@pytest.fixture(params=TIE_RULES)
def tie_rule(request) -> str:
    """Each tie rule of :data:`mtlib.ties.TIE_RULES` in turn."""
    return request.param
