"""Checks for section generalization tasks (see advlab.checks)."""
