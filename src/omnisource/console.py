"""The one console every module prints to (rich), so no module imports a stage for it."""
from __future__ import annotations

from rich.console import Console

console = Console()
