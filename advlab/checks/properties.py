"""Checks for section properties tasks (see advlab.checks)."""
