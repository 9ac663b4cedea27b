"""``python -m mtlib.sweep NAME [--jobs N | --local-cluster N | --scheduler ADDRESS]``: run a named sweep.

The command line lives in :func:`mtlib.sweep.registry.main`; this file only calls it, under the
``__main__`` guard so that importing it (``pytest --doctest-modules``) runs nothing.
"""

import sys

from mtlib.sweep.registry import main

if __name__ == "__main__":
    sys.exit(main())
