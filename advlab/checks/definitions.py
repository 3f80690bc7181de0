"""Checks for section definitions tasks (see advlab.checks)."""
