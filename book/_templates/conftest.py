"""The chapter template is not a chapter: nbval (``pytest --nbval book``) must not run it."""

collect_ignore_glob = ["*.ipynb"]
