"""The ``omnisource`` command line: ``common`` holds the shared options and helpers, ``commands``
builds the app from its own commands and those of ``collect``, ``weak``, ``report``, ``compare``,
``sweep`` and ``serve`` here. The command line is the top layer: it imports the stages, no module
outside this package imports it (tests/test_layers.py)."""


def __getattr__(name: str):
    # ``app`` and ``main`` load every command; importing ``omnisource.cli.common`` must not.
    if name in ("app", "main"):
        from . import commands

        return getattr(commands, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
