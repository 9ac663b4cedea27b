"""Alias of :mod:`mtlib.sweep.registry` (the book's named sweeps), kept for ``mtlib.sweeps`` imports.

Chapter: sweeps.
"""

from mtlib.sweep.registry import SWEEPS, Sweep, main

__all__ = ["SWEEPS", "Sweep", "main"]
