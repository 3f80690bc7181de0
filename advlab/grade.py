"""Grade submitted exercise notebooks by calling the installed checks on the students' functions.

::

    python -m advlab.course grade SUBMISSIONS... [--out grades.csv] [--student-from REGEX] [--timeout SECONDS]

SUBMISSIONS are notebook files (or folders, searched for ``*.ipynb``); the student is the file name's stem, or the
first group of ``--student-from`` searched in the path. Every submission gets one row per task of its notebook, with
one verdict: ``PASS``, ``FAIL`` (with the check's message and hint), ``TODO`` (the untouched stub),
``ERROR`` (with the exception's last line) or ``TIMEOUT``. A submission is read, copied and never modified.

How a submission is graded:

1. **Which notebook.** The solution notebook (``solutions/``) whose stem appears in the submission's path, else
   the one sharing the most task function names and cell ids with it. Its tasks (:func:`advlab.course.tasks`: a
   function with a solution block, graded by the ``check_*`` call that follows) are the ones graded, whatever the
   submission kept of its cells.
2. **The notebook's run.** A copy runs headless in its own fresh kernel (nbclient, cell errors allowed) within
   ``--timeout`` seconds. The run never earns a pass: it only says whether each task function was defined when
   the notebook ran. A task whose definition the run did not reach in time is ``TIMEOUT``; one left undefined
   because its cell raised is ``ERROR`` with that exception's last line.
3. **The checks.** A separate, fresh Python process (in a new empty folder; with ``-P`` on Python 3.11+, so no
   working folder goes on ``sys.path``) runs only the submission's imports and top-level ``def``/``class``
   statements, taken from its code cells as saved, in notebook order (a later definition replaces an earlier
   one, as in the kernel). Nothing else runs there: no check cell, assignment, print, loop or monkeypatch. The
   process then drops every ``advlab`` module those statements imported, restores the builtins and the import
   system, imports ``advlab.checks`` afresh from disk and calls each task's check on the student's function, its
   output captured. The verdict is the check's return value: ``PASS`` when it is True; ``TODO`` when the function
   raised ``NotImplementedError`` with :data:`advlab.course.STUB_MESSAGE`; else ``FAIL`` with the message the
   check printed. ``ERROR`` when the function is not defined, its definition raised or the check could not
   finish; ``TIMEOUT`` when a check runs longer than ``--timeout`` (the process is killed, and a new one checks
   the remaining tasks). Verdicts travel as JSON lines in a file, never as printed ``[PASS]`` text.

So a notebook that prints a fake ``[PASS]``, edits or deletes its check cells, deletes, rebinds or monkeypatches
the check functions (``advlab.checks.check_x = lambda f: True``) gains nothing: none of those statements runs where
the checks run. Helper state: a task function can use the notebook's imports and its helper functions and classes
(``per_sample``, another task's function), but not module-level variables computed in the notebook (a model, a
tensor): those raise ``NameError`` when checked, a FAIL. The course's tasks take everything as arguments.

Limits. The bodies, decorators and default values of the submission's own functions and classes run in the
checking process, as they must to be checked; code written there to sabotage the checker (patching ``torch``,
forging the result file) is not prevented, as in any Python autograder. Review the code of surprising results,
and grade inside a sandbox (a container, or a user who cannot write to the Python installation): the grader
stops with an error when advlab's source files (``advlab/**/*.py``) change on disk while it runs.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import csv
import functools
import hashlib
import importlib
import io
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

# advlab.course is imported where it is used: the notebook's runner starts this file by its path, without the
# package (whose import loads torch, a second and more for nothing)
if TYPE_CHECKING:
    from advlab import course

VERDICTS = ("PASS", "FAIL", "TODO", "ERROR", "TIMEOUT")
CSV_FIELDS = ("student", "notebook", "task", "verdict", "detail", "submission")
STARTUP_S = 120.0  # on top of the time limit: starting a kernel, or a checking process (it imports torch)
_POLL_S = 0.05
_KERNEL = "advlab-grader"
# -P: neither the working folder (-m) nor the script's folder goes on sys.path (Python 3.11+)
_SAFE_PATH = ["-P"] if sys.version_info >= (3, 11) else []


class GradingError(RuntimeError):
    """The grading itself cannot go on (advlab's source changed on disk, a kernel cannot start)."""


@dataclass(frozen=True)
class Verdict:
    """One row of the result: a student's verdict on one task of one notebook."""

    student: str
    notebook: str
    task: str
    verdict: str
    detail: str
    submission: str


def _course():
    from advlab import course

    return course


def _last_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[-1]}" if text else type(err).__name__


# ---------------------------------------------------------------------------------------- reading a submission
_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def kept_statements(tree: ast.Module) -> list[ast.stmt]:
    """The statements of a cell that the checking process runs: imports and function or class definitions.

    The imports in the body of a top-level ``try`` count too (the setup cell's ``try: import advlab``).
    """
    kept: list[ast.stmt] = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom, *_DEFINITIONS)):
            kept.append(node)
        elif isinstance(node, ast.Try):
            kept += [n for n in node.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    return kept


def _bound_names(node: ast.stmt) -> list[str]:
    if isinstance(node, _DEFINITIONS):
        return [node.name]
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return [a.asname or a.name.split(".")[0] for a in node.names]
    return []


@dataclass
class Code:
    """The code cells of a submission as the grader reads them from the file (nothing is run)."""

    cells: list[tuple[int, str]] = field(default_factory=list)  # (cell index, Python source) of cells that parse
    unparsable: dict[int, tuple[str, str]] = field(default_factory=dict)  # index -> (source, "SyntaxError: ...")
    defined_in: dict[str, int] = field(default_factory=dict)  # def/class name -> last cell defining it


def read_code(nb: dict) -> Code:
    code = Code()
    cells = nb.get("cells") if isinstance(nb, dict) else None
    for index, cell in enumerate(cells if isinstance(cells, list) else []):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        raw = cell.get("source", "")
        raw = "".join(raw) if isinstance(raw, list) else str(raw)
        try:
            source = _course().python_source(raw)
            tree = ast.parse(source)
        except Exception as err:  # SyntaxError, or IPython's transformer giving up
            where = f" (line {err.lineno})" if isinstance(err, SyntaxError) and err.lineno else ""
            code.unparsable[index] = (raw, f"{type(err).__name__}: {getattr(err, 'msg', None) or err}{where}")
            continue
        code.cells.append((index, source))
        for node in kept_statements(tree):
            if isinstance(node, _DEFINITIONS):
                code.defined_in[node.name] = index
    return code


def student_of(path: Path, pattern: str | None = None) -> str:
    """The student of a submission: the first group of ``pattern`` searched in the path, else the file's stem."""
    if pattern:
        m = re.search(pattern, path.as_posix())
        if m and m.groups() and m.group(1):
            return m.group(1)
        print(f"warning: --student-from {pattern!r} does not match {path}; using {path.stem!r}", file=sys.stderr)
    return path.stem


def notebook_of(path: Path, nb: dict | None, solutions: dict[str, list[course.TaskCell]],
                ids: dict[str, set[str]]) -> str | None:
    """The solution notebook (stem) that a submission answers, or None (see the module's docstring)."""
    named = [stem for stem in solutions if stem in path.as_posix()]
    if len(named) == 1:
        return named[0]
    if nb is None:
        return None
    defined = set(read_code(nb).defined_in)
    have = {c.get("id") for c in nb.get("cells", []) if isinstance(c, dict)}
    scores = {stem: 2 * len(defined & {t.name for t in tasks}) + len(have & ids[stem])
              for stem, tasks in solutions.items() if not named or stem in named}
    best = max(scores, key=scores.get, default=None)
    return best if best is not None and scores[best] > 0 else None


# ------------------------------------------------------------------------------------- the notebook's own run
@dataclass
class Run:
    """What the kernel run of a submission says: where it stopped, which cells raised, which names it defined."""

    timeout_cell: int | None = None  # the cell running when the time ran out
    died_cell: int | None = None  # the cell running when the kernel died
    errors: dict[int, str] = field(default_factory=dict)  # cell index -> the exception's last line
    defined: dict[str, bool] | None = None  # task name -> a callable at the end of the run (None: not known)
    unreadable: str | None = None  # not a notebook nbformat can read


def _kernelspec(folder: Path) -> Path:
    """A kernelspec that starts a kernel in this Python (whatever python3 means elsewhere); returns JUPYTER_PATH."""
    spec = folder / "kernels" / _KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "advlab grader", "language": "python"}))
    return folder


def _kill_group(pid: int | None) -> None:
    if pid:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def _records(path: Path) -> list[dict]:
    out = []
    if path.exists():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    out.append(record)
    return out


def run_notebook(path: Path, work: Path, names: Sequence[str], timeout: float) -> Run:
    """Run the notebook ``path`` (a copy in the empty folder ``work``) in a fresh kernel within ``timeout`` s."""
    progress, probe = work / "progress.jsonl", work / "probe.json"
    env = {**os.environ, "JUPYTER_PATH": str(_kernelspec(work / ".jupyter"))}
    cmd = [sys.executable, *_SAFE_PATH, str(Path(__file__).resolve()), "_execute", str(path), str(progress),
           str(timeout), json.dumps(list(names)), str(probe)]
    with open(work / "execute.log", "wb") as log:
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True)
        try:
            proc.wait(timeout=timeout + STARTUP_S + 30)
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            proc.wait()
    run, started, kernel = Run(), None, None
    for record in _records(progress):
        event, cell = record.get("event"), record.get("cell")
        if event == "kernel" and kernel is None:  # the runner's own record, written before any cell ran
            kernel = record.get("pid") if isinstance(record.get("pid"), int) else None
        elif event == "start":
            started = cell
        elif event == "done":
            started = None
            if record.get("error"):
                run.errors[cell] = record["error"]
        elif event == "timeout":
            run.timeout_cell, started = cell, None
        elif event == "died":
            run.died_cell, started = cell, None
        elif event == "unreadable":
            run.unreadable = record.get("error")
    _kill_group(kernel)  # whatever the kernel left running (it leads its own process group)
    if started is not None:  # the executor itself was stopped at the hard limit
        run.timeout_cell = started
    if kernel is None and run.unreadable is None and run.timeout_cell is None:
        tail = (work / "execute.log").read_text(errors="replace").strip().splitlines()[-3:]
        raise GradingError(f"could not start a kernel for {path}: {' | '.join(tail)}")
    if probe.exists() and run.timeout_cell is None and run.died_cell is None:
        with contextlib.suppress(ValueError):
            found = json.loads(probe.read_text(encoding="utf-8"))
            if isinstance(found, dict):
                run.defined = {name: found.get(name) is True for name in names}
    return run


def _probe_source(names: Sequence[str], path: Path) -> str:
    return (f"import json as _advlab_json\n"
            f"with open({str(path)!r}, 'w') as _advlab_file:\n"
            f"    _advlab_json.dump({{n: callable(globals().get(n)) for n in {list(names)!r}}}, _advlab_file)\n")


def _execute_main(path: str, progress: str, timeout: str, names: str, probe: str) -> int:
    """In a subprocess: run the notebook cell by cell, logging each cell's start, end and error to ``progress``."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    log = open(progress, "a", encoding="utf-8")  # open as long as the process lives

    def emit(**record) -> None:
        log.write(json.dumps(record) + "\n")
        log.flush()

    try:
        nb = nbformat.read(path, as_version=4)
        cells = list(nb.cells)
    except Exception as err:
        emit(event="unreadable", error=_last_line(err))
        return 0
    nb.cells = cells + [nbformat.v4.new_code_cell(_probe_source(json.loads(names), Path(probe)))]
    nb.metadata["kernelspec"] = {"name": _KERNEL, "display_name": "advlab grader", "language": "python"}
    deadline = [math.inf]
    client = NotebookClient(
        nb, kernel_name=_KERNEL, allow_errors=True, shutdown_kernel="immediate", startup_timeout=int(STARTUP_S),
        timeout_func=lambda cell: max(1, math.ceil(deadline[0] - time.monotonic())),
        resources={"metadata": {"path": str(Path(path).parent)}},
    )
    with client.setup_kernel():
        emit(event="kernel", pid=client.km.provisioner.pid)
        deadline[0] = time.monotonic() + float(timeout)
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            if time.monotonic() >= deadline[0]:
                emit(event="timeout", cell=index)
                break
            emit(event="start", cell=index)
            try:
                client.execute_cell(cell, index)
            except CellTimeoutError:
                emit(event="timeout", cell=index)
                break
            except DeadKernelError:
                emit(event="died", cell=index)
                break
            errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
            line = f"{errors[0].get('ename')}: {errors[0].get('evalue')}".strip().splitlines() if errors else []
            emit(event="done", cell=index, error=line[-1] if line else None)
    return 0


# ------------------------------------------------------------------------------------------- the checks' process
def _restore_dict(target: dict, saved: dict) -> None:
    for key in [k for k in target if k not in saved]:
        del target[key]
    target.update(saved)


def _check_one(namespace: dict, failed: dict[str, str], checks: dict[str, Callable], name: str, check: str,
               stub: str) -> tuple[str, str]:
    if check not in checks:
        return "ERROR", f"advlab.checks has no {check}"
    if name not in namespace:
        return "ERROR", failed.get(name, f"NameError: name {name!r} is not defined")
    fn, stubbed = namespace[name], []

    def traced(*args, **kwargs):
        with contextlib.redirect_stdout(io.StringIO()):  # the student's own prints are not the check's message
            try:
                return fn(*args, **kwargs)
            except NotImplementedError as err:
                if err.args == (stub,):
                    stubbed.append(True)
                raise

    arg = functools.wraps(fn)(traced) if callable(fn) else fn
    said = io.StringIO()
    try:
        with contextlib.redirect_stdout(said), contextlib.redirect_stderr(io.StringIO()):
            ok = checks[check](arg)
    except BaseException as err:  # SystemExit, KeyboardInterrupt... out of the student's function
        return "ERROR", _last_line(err)
    message = " ".join(said.getvalue().split())
    if ok is True:
        return "PASS", message.removeprefix("[PASS] ")
    if stubbed:
        return "TODO", message.removeprefix("[TODO] ")
    return "FAIL", message.removeprefix("[FAIL] ")


def _check_main(spec_path: str, results_path: str) -> int:
    """In a fresh process: define the submission's functions, import the checks afresh, check every task."""
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    results = open(results_path, "a", encoding="utf-8")  # open as long as the process lives

    def emit(**record) -> None:
        results.write(json.dumps(record) + "\n")
        results.flush()

    saved = dict(vars(builtins)), list(sys.path), list(sys.meta_path), list(sys.path_hooks)
    namespace: dict = {"__name__": "__main__", "__builtins__": builtins}
    failed: dict[str, str] = {}
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        for index, source in spec["cells"]:
            for node in kept_statements(ast.parse(source)):
                try:
                    exec(compile(ast.Module([node], []), f"<cell {index + 1}>", "exec"), namespace)
                except BaseException as err:
                    failed.update(dict.fromkeys(_bound_names(node), _last_line(err)))
    _restore_dict(vars(builtins), saved[0])
    sys.path[:], sys.meta_path[:], sys.path_hooks[:] = saved[1], saved[2], saved[3]
    sys.path_importer_cache.clear()
    for key in [k for k in sys.modules if k == "advlab" or k.startswith("advlab.")]:
        del sys.modules[key]
    module = importlib.import_module("advlab.checks")  # afresh, from disk
    checks = {task.check.__name__: task.check for task in module.TASKS.values()}
    emit(event="ready")
    for name, check in spec["tasks"]:
        emit(event="start", task=name)
        verdict, detail = _check_one(namespace, failed, checks, name, check, spec["stub"])
        emit(event="result", task=name, verdict=verdict, detail=detail)
    return 0


def source_digest() -> str:
    """A digest of advlab's source files on disk (``advlab/**/*.py``: the checks and the references they use)."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def run_checks(code: Code, todo: Sequence[tuple[str, str]], timeout: float, digest: str | None = None
               ) -> dict[str, tuple[str, str]]:
    """Verdicts ``{task: (verdict, detail)}`` of the checks ``todo`` = [(task, check_name)] in fresh processes.

    Each process gets a new private folder (made after the notebook's kernel is gone, under a name that kernel
    could not know) and a results file that the grader creates empty.
    """
    out: dict[str, tuple[str, str]] = {}
    remaining = list(todo)
    while remaining:
        if digest is not None and source_digest() != digest:
            raise GradingError("advlab's source files changed on disk while grading; grade in a sandbox, start again")
        with tempfile.TemporaryDirectory(prefix="advlab-check-", ignore_cleanup_errors=True) as tmp:
            before = len(remaining)
            remaining = _check_round(code, remaining, timeout, Path(tmp), out)
        if digest is not None and source_digest() != digest:
            raise GradingError("advlab's source files changed on disk while grading; grade in a sandbox, start again")
        assert len(remaining) < before, "every round settles at least one task"
    return out


def _check_round(code: Code, remaining: list[tuple[str, str]], timeout: float, folder: Path,
                 out: dict[str, tuple[str, str]]) -> list[tuple[str, str]]:
    """One checking process: fills ``out``; returns the tasks it did not get to (after a timeout or a crash)."""
    spec, results = folder / "spec.json", folder / "results.jsonl"
    spec.write_text(json.dumps({"cells": code.cells, "tasks": remaining, "stub": _course().STUB_MESSAGE}))
    results.open("x").close()
    cmd = [sys.executable, *_SAFE_PATH, "-m", "advlab.grade", "_check", str(spec), str(results)]
    current, ready, stopped = None, False, False
    with open(folder / "check.log", "wb") as log:
        proc = subprocess.Popen(cmd, cwd=folder, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True)
        deadline, seen = time.monotonic() + timeout + STARTUP_S, 0
        while True:
            done = proc.poll() is not None
            records = _records(results)
            for record in records[seen:]:
                event = record.get("event")
                if event == "ready":
                    ready, deadline = True, time.monotonic() + timeout
                elif event == "start":
                    current, deadline = record.get("task"), time.monotonic() + timeout
                elif event == "result" and record.get("task") == current:
                    out[current] = (str(record.get("verdict")), str(record.get("detail", "")))
                    current, deadline = None, time.monotonic() + timeout
            seen = len(records)
            if done:
                break
            if time.monotonic() > deadline:
                stopped = True
                break
            time.sleep(_POLL_S)
        _kill_group(proc.pid)
        proc.wait()
    if current is not None:
        out[current] = (("TIMEOUT", f"the check did not finish within {timeout:g} s") if stopped else
                        ("ERROR", f"the checking process ended (exit code {proc.returncode}) during the check"))
    left = [(name, check) for name, check in remaining if name not in out]
    if left and len(left) == len(remaining):  # no task settled: the process never got to the checks
        if stopped:
            why = "TIMEOUT", f"the checking process did not get to the checks within {timeout + STARTUP_S:.0f} s"
        else:
            tail = (folder / "check.log").read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            why = "ERROR", f"the checking process failed{'' if ready else ' to start'}: {tail[0]}"
        out.update(dict.fromkeys((name for name, _ in left), why))
        return []
    return left


# ------------------------------------------------------------------------------------------------ grading
def _verdicts_before_checking(task: course.TaskCell, code: Code, run: Run, timeout: float) -> tuple[str, str] | None:
    """A verdict that the file and the notebook's run already settle (None: the check decides)."""
    name = task.name
    if run.unreadable:
        return "ERROR", f"not a notebook: {run.unreadable}"
    cell = code.defined_in.get(name)
    if cell is None:
        pattern = re.compile(rf"\b(def|class)\s+{re.escape(name)}\b")
        broken = [(i, why) for i, (raw, why) in code.unparsable.items() if pattern.search(raw)]
        if broken:
            return "ERROR", f"{broken[-1][1]} in cell {broken[-1][0] + 1}"
        return "ERROR", f"no `def {name}(...)` in the submission's code cells"
    if run.timeout_cell is not None and cell >= run.timeout_cell:
        return "TIMEOUT", (f"the notebook ran out of its {timeout:g} s in cell {run.timeout_cell + 1}, before "
                           f"defining {name} (cell {cell + 1})")
    if run.died_cell is not None and cell >= run.died_cell:
        return "ERROR", f"the kernel died in cell {run.died_cell + 1}, before defining {name} (cell {cell + 1})"
    defined = run.defined.get(name) if run.defined is not None else cell not in run.errors
    if not defined:
        return "ERROR", run.errors.get(cell, f"NameError: {name} is not a function after the notebook ran")
    return None


def grade_one(path: Path, stem: str, tasks: Sequence[course.TaskCell], work: Path, timeout: float,
              check_timeout: float | None = None, digest: str | None = None) -> dict[str, tuple[str, str]]:
    """``{task: (verdict, detail)}`` for the submission ``path`` of the notebook ``stem`` (see the docstring)."""
    data = path.read_bytes()
    copy = work / "run" / f"{stem}.ipynb"
    copy.parent.mkdir(parents=True)
    copy.write_bytes(data)
    try:
        nb = json.loads(data.decode("utf-8"))
    except ValueError as err:
        return {t.name: ("ERROR", f"not a notebook: {_last_line(err)}") for t in tasks}
    code = read_code(nb)
    run = run_notebook(copy, copy.parent, [t.name for t in tasks], timeout)
    out: dict[str, tuple[str, str]] = {}
    for task in tasks:
        settled = _verdicts_before_checking(task, code, run, timeout)
        if settled is not None:
            out[task.name] = settled
    todo = [(t.name, t.check) for t in tasks if t.name not in out]
    out.update(run_checks(code, todo, timeout if check_timeout is None else check_timeout, digest))
    return {t.name: out[t.name] for t in tasks}


def _submissions(paths: Iterable[str | Path]) -> list[Path]:
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(q for q in p.rglob("*.ipynb") if ".ipynb_checkpoints" not in q.parts)
        else:
            found.append(p)
    return found


def grade(submissions: Iterable[str | Path], solutions: Path, timeout: float = 600.0,
          student_from: str | None = None, check_timeout: float | None = None,
          log: Callable[[str], None] | None = None) -> list[Verdict]:
    """Grade the submitted notebooks; one :class:`Verdict` per submission and task, in order.

    ``timeout`` limits each notebook's run and (unless ``check_timeout`` is given) each task's check, in seconds.
    """
    solution_nbs = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(solutions.glob("*.ipynb"))}
    if not solution_nbs:
        raise GradingError(f"no solution notebooks in {solutions}")
    task_sets = {stem: _course().tasks(nb) for stem, nb in solution_nbs.items()}
    ids = {stem: {c.get("id") for c in nb["cells"]} - {None} for stem, nb in solution_nbs.items()}
    digest = source_digest()
    rows: list[Verdict] = []
    for path in _submissions(submissions):
        student = student_of(path, student_from)
        try:
            nb = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            nb = None
        stem = notebook_of(path, nb, task_sets, ids)
        if stem is None:
            rows.append(Verdict(student, "", "", "ERROR", "cannot tell which course notebook this is", str(path)))
            continue
        start = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="advlab-grade-", ignore_cleanup_errors=True) as tmp:
            verdicts = grade_one(path, stem, task_sets[stem], Path(tmp), timeout, check_timeout, digest)
        rows += [Verdict(student, stem, name, v, detail, str(path)) for name, (v, detail) in verdicts.items()]
        if log:
            passed = sum(v == "PASS" for v, _ in verdicts.values())
            log(f"{student} {stem}: {passed}/{len(verdicts)} passed ({time.monotonic() - start:.0f} s)")
    return rows


def write_csv(rows: Iterable[Verdict], path: str | Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_FIELDS)
        for row in rows:
            writer.writerow([getattr(row, name) for name in CSV_FIELDS])


def summary(rows: Sequence[Verdict]) -> str:
    """Per task: how many submissions passed it (and the other verdicts); per student: the score."""
    lines = ["task                                          passed  " + "  ".join(f"{v:>7}" for v in VERDICTS[1:])]
    tasks: dict[tuple[str, str], list[str]] = {}
    students: dict[str, list[str]] = {}
    for row in rows:
        tasks.setdefault((row.notebook, row.task), []).append(row.verdict)
        students.setdefault(row.student, []).append(row.verdict)
    for (stem, task), got in tasks.items():
        label = f"{stem}: {task}" if task else stem or "(unknown notebook)"
        counts = "  ".join(f"{got.count(v):>7}" for v in VERDICTS[1:])
        lines.append(f"{label:<44} {got.count('PASS'):>3}/{len(got):<3}  {counts}")
    lines += ["", "student                         score"]
    for student, got in students.items():
        lines.append(f"{student:<30} {got.count('PASS'):>3}/{len(got)}")
    return "\n".join(lines)


def main(submissions: Sequence[str], out: str | None = None, student_from: str | None = None,
         timeout: float = 600.0, solutions: Path = Path("solutions")) -> int:
    """``python -m advlab.course grade``: grade, write the CSV, print the summary; 0, or 2 on a usage error."""
    paths = _submissions(submissions)
    missing = [p for p in paths if not p.is_file()]
    if not paths or missing:
        print(f"grade: no such submission: {', '.join(map(str, missing))}" if missing else "grade: no submissions",
              file=sys.stderr)
        return 2
    try:
        rows = grade(paths, solutions, timeout, student_from, log=lambda s: print(s, file=sys.stderr))
    except GradingError as err:
        print(f"grade: {err}", file=sys.stderr)
        return 2
    if out:
        write_csv(rows, out)
        print(f"wrote {out} ({len(rows)} rows)", file=sys.stderr)
    print(summary(rows))
    return 0


def _entry(argv: list[str]) -> int:
    if argv[:1] == ["_execute"]:
        return _execute_main(*argv[1:])
    if argv[:1] == ["_check"]:
        return _check_main(*argv[1:])
    return _course()._main(["grade", *argv])


if __name__ == "__main__":
    raise SystemExit(_entry(sys.argv[1:]))
