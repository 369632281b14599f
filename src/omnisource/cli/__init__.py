"""The ``omnisource`` command line: ``common`` holds the shared options and helpers, ``commands``
builds the app. Stage packages register their own commands (``collect.cli``, ``weak.cli``,
``report.stage``, ``sweep``) from ``common`` alone, so nothing imports back into the app."""


def __getattr__(name: str):
    # ``app`` and ``main`` load every command; importing ``omnisource.cli.common`` must not.
    if name in ("app", "main"):
        from . import commands

        return getattr(commands, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
