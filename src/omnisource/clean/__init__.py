"""Cleaning (DESIGN.md §1): decode checks of web files, exact and evaluation-set de-duplication."""
