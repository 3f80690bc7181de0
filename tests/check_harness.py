"""Shared tests for the exercise checks of one course section.

A section's test file (``tests/test_checks_<module>.py``) keeps a reference solution and at least two plausible
wrong implementations per task, then asks this module for the standard tests::

    test_tasks_covered, test_passes_on_reference, test_todo_on_stub, test_fails_on_wrong = check_tests(
        REFERENCE, WRONG, sections={"02"}
    )
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from advlab import checks, course


def stub(*args, **kwargs):
    """What the exercise generator leaves in place of a solution."""
    raise NotImplementedError(course.STUB_MESSAGE)


def check_tests(reference: dict[str, Callable], wrong: dict[str, dict[str, Callable]], sections: set[str]):
    """The four standard tests for the tasks of ``sections``: coverage, [PASS] on the reference, [TODO] on a
    stub, [FAIL] with a hint on every wrong implementation; none may print a traceback."""

    def test_every_task_has_a_reference_and_two_wrong_implementations():
        registered = {name for name, task in checks.TASKS.items() if task.section in sections}
        assert registered, f"no checks registered for sections {sorted(sections)}"
        assert set(reference) == registered == set(wrong)
        assert all(len(w) >= 2 for w in wrong.values())

    @pytest.mark.parametrize("name", sorted(reference))
    def test_check_passes_on_the_reference(name, capsys):
        assert checks.check(name, reference[name]) is True
        out = capsys.readouterr().out
        assert out.startswith(f"[PASS] {checks.TASKS[name].title}: ") and "Traceback" not in out

    @pytest.mark.parametrize("name", sorted(reference))
    def test_check_reports_a_stub_as_todo(name, capsys):
        assert checks.check(name, stub) is False
        out = capsys.readouterr().out
        assert out.startswith(f"[TODO] {checks.TASKS[name].title}: not implemented yet") and "Traceback" not in out

    @pytest.mark.parametrize("name,label", [(n, w) for n in sorted(wrong) for w in wrong[n]])
    def test_check_fails_on_a_wrong_implementation(name, label, capsys):
        assert checks.check(name, wrong[name][label]) is False, f"{name}: {label!r} passed"
        out = capsys.readouterr().out
        assert out.startswith("[FAIL] ") and "\n       Hint: " in out and "Traceback" not in out

    return (
        test_every_task_has_a_reference_and_two_wrong_implementations,
        test_check_passes_on_the_reference,
        test_check_reports_a_stub_as_todo,
        test_check_fails_on_a_wrong_implementation,
    )
