"""``python -m omnisource ...`` (torchrun launches this too)."""
from .cli.commands import main

main()
