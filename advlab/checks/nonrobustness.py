"""Checks for section nonrobustness tasks (see advlab.checks)."""
