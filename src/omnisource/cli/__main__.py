"""``python -m omnisource.cli ...``"""
from .commands import main

main()
