"""Cleaning (docs/methods.md): decode checks of web files, exact and evaluation-set de-duplication."""
