"""The benchmark script runs end to end (tiny sizes; no timing is asserted)."""

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def test_attack_benchmark_smoke(tmp_path):
    out = tmp_path / "bench.md"
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "attacks.py"), "--quick", "--cases", "mnist", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    table = out.read_text()
    for attack in ("PGD-Linf", "PGD-L2", "FGSM", "CW-L2", "DeepFool"):
        assert f"| {attack} | advlab |" in table
    assert "advlab early_stop" in table and "torchattacks" in table
    assert "| PGD-Linf | advlab whole batch |" in table and "| PGD-Linf | torchattacks chunked |" in table
    # the bfloat16 row exactly where the CPU has bfloat16 arithmetic, its robust accuracy counted in float32
    bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert ("| PGD-Linf | advlab, model in bf16 |" in table) == bf16
    # the targets section restates the PGD rows: one line per norm, with a finite overhead over the floor
    section = table.split("## PGD against the targets")[1]
    for attack in ("PGD-Linf", "PGD-L2"):
        line = next(row for row in section.splitlines() if row.startswith(f"| MNIST CNN | {attack} |"))
        cells = line.split(" | ")
        assert float(cells[2].rstrip("×")) > 0
        # the paired ratio: median [min–max] over reps of advlab's time / the floor timed just before it
        median, lo, hi = (float(v) for v in re.findall(r"[0-9.]+", cells[3]))
        assert 0 < lo <= median <= hi
        # what the 1.5× target asks: torchattacks' time / 1.5 over the best-chunk floor (the rows' last column)
        ta = next(row for row in table.splitlines() if row.startswith(f"| MNIST CNN | {attack} | torchattacks |"))
        assert float(cells[4].rstrip("×")) == pytest.approx(float(ta.rstrip(" |").split(" | ")[-1].rstrip("×")) / 1.5,
                                                             abs=0.009)  # two roundings to 0.01
        if bf16:  # "speed× (robust accuracy)"
            speed, acc = (float(v) for v in re.findall(r"[0-9.]+", cells[-1]))
            assert speed > 0 and 0 <= acc <= 1


def _run_quick(script: str, tmp_path) -> str:
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--out", "-"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


def _table_rows(md: str) -> list[list[str]]:
    return [r.strip("| ").split(" | ") for r in md.splitlines()
            if r.startswith("| ") and "µs /" not in r and not r.startswith("|---")]


def test_chunk_benchmark_smoke(tmp_path):
    sweep, layers = _run_quick("chunks.py", tmp_path).split("## One pass, layer by layer")
    rows = [" | ".join(c) for c in _table_rows(sweep)]
    models = {r.split(" | ")[0].lstrip("| ") for r in rows}
    assert models == {"MNIST CNN (zoo mnist-cnn)", "Madry et al.'s MNIST CNN", "PreAct-ResNet-18, CIFAR shape"}
    for r in rows:
        cells = r.strip("| ").split(" | ")
        assert float(cells[3].replace(",", "")) > 0 and float(cells[4]) > 0
    assert sum("**" in r for r in rows) == 3  # one fastest chunk per model
    # the layer table: every layer of both MNIST CNNs, a col2im time exactly for the convolutions, and a sum row
    cells = _table_rows(layers)
    per_model = {m: [c for c in cells if c[0] == m] for m in ("MNIST CNN (zoo mnist-cnn)", "Madry et al.'s MNIST CNN")}
    assert {c[0] for c in cells} == set(per_model)
    for m, n_layers in (("MNIST CNN (zoo mnist-cnn)", 9), ("Madry et al.'s MNIST CNN", 11)):
        *layer_cells, total = per_model[m]
        assert len(layer_cells) == n_layers and total[1].startswith("sum of the layers")
        for c in layer_cells:
            assert float(c[2].replace(",", "")) > 0 and float(c[3].replace(",", "")) >= 0
            assert (len(c) == 6 and float(c[5].replace(",", "")) > 0) == ("Conv2d" in c[1])
        share, per_image = re.search(r"([0-9]+)% \(pass: ([0-9.,]+) µs per image\)", " | ".join(total)).groups()
        assert int(share) > 0 and float(per_image.replace(",", "")) > 0


def test_training_benchmark_smoke(tmp_path):
    rows = [r for r in _run_quick("training.py", tmp_path).splitlines() if r.startswith("| ") and "---" not in r]
    cells = [r.strip("| ").split(" | ") for r in rows[1:]]
    assert [c[0] for c in cells] == ["advlab pgd_at", "plain loop", "floor"]
    # "time / floor" is each row's time over the floor's, i.e. the floor's images per second over the row's
    per_second = {c[0]: float(c[2].replace(",", "")) for c in cells}
    for name, _, _, ratio in cells:
        assert float(ratio.rstrip("×")) == pytest.approx(per_second["floor"] / per_second[name], abs=0.006, rel=0.01)


def test_projection_benchmark_smoke_agrees_with_bisection():
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "projection.py"), "--n", "64", "--reps", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [line for line in run.stdout.splitlines() if line.startswith("| 0.")]
    assert len(rows) == 2
    assert all(float(row.split(" | ")[-1].rstrip(" |")) < 1e-4 for row in rows)  # same projection, float32


def test_gpu_check_says_what_it_needs_and_survives_a_timeout(monkeypatch):
    import importlib.util
    import os

    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    # a step that runs past its limit comes back as exit 124 with a message, not as an exception
    slow = gpu_check._run([sys.executable, "-c", "import time; time.sleep(30)"], dict(os.environ), 1)
    assert slow.returncode == 124 and "ran past 1 s" in slow.stdout
    # without CUDA it refuses with exit 2 and says so, instead of benchmarking the CPU under a GPU title
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == 2


def test_gpu_check_dry_run_lists_every_notebook_and_solution():
    """`make test` runs the GPU script's plan on the CPU: every course notebook and solution is in it, tests first."""
    import subprocess

    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    listed = done.stdout.splitlines()
    expected = sorted(p.relative_to(ROOT).as_posix() for d in ("notebooks", "solutions")
                      for p in (ROOT / d).glob("*.ipynb"))
    assert len(expected) >= 13
    for path in expected:
        assert any(line.startswith(path + " ") for line in listed), path
    assert listed[0].startswith("tests ") and listed[-2].startswith("benchmark ")
    assert not any("exercises/" in line for line in listed)  # the stubs raise by design


def test_gpu_check_reports_a_failing_notebook(tmp_path):
    """A notebook with a failing claim is an error of the executed notebook, with its last line reported."""
    import importlib.util

    import nbformat

    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"),
                                         nbformat.v4.new_code_cell("assert x == 2, 'the claim fails'")])
    bad = tmp_path / "bad.ipynb"
    nbformat.write(nb, bad)
    assert gpu_check.execute_one(bad, 60) == 1
    nb.cells[1].source = "assert x == 1"
    nbformat.write(nb, bad)
    assert gpu_check.execute_one(bad, 60) == 0


def _gpu_check():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    return gpu_check


def test_gpu_check_stops_at_the_first_error_and_says_where(tmp_path, capsys):
    import nbformat

    gpu_check = _gpu_check()
    mark = tmp_path / "ran"
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# t"),
        nbformat.v4.new_code_cell("import pathlib; here = pathlib.Path.cwd()"),
        nbformat.v4.new_code_cell("raise ValueError('the second cell\\nfails')"),  # a two-line message: one line
        nbformat.v4.new_code_cell(f"pathlib.Path({str(mark)!r}).write_text(str(here))"),
    ])
    path = tmp_path / "sub" / "nb.ipynb"
    path.parent.mkdir()
    nbformat.write(nb, path)
    assert gpu_check.execute_one(path, 60) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == "cell 2: ValueError: the second cell fails" and not mark.exists()  # cell 3 never ran
    nb.cells[2].source = "x = 1"
    nbformat.write(nb, path)
    assert gpu_check.execute_one(path, 60) == 0
    assert mark.read_text() == str(path.parent)  # the kernel ran in the notebook's folder
    nb.cells[2].source = "import time; time.sleep(30)"
    nbformat.write(nb, path)
    assert gpu_check.execute_one(path, 2) == 1
    assert capsys.readouterr().out.strip().splitlines()[-1] == "cell 2 ran past 2 s"


def test_gpu_check_timeout_takes_the_notebooks_kernel_down(tmp_path):
    """A notebook stopped at its step's limit leaves no kernel running (one would hold the GPU's memory and cores
    during the other steps): its last line says where it stood, and its kernel is gone."""
    import os

    import nbformat

    gpu_check = _gpu_check()
    pid_file = tmp_path / "kernel.pid"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        f"import os, pathlib, time\npathlib.Path({str(pid_file)!r}).write_text(str(os.getpid()))\ntime.sleep(120)")])
    path = tmp_path / "slow.ipynb"
    nbformat.write(nb, path)
    done = gpu_check._run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--execute-one", str(path)],
                          dict(os.environ), 10)
    assert done.returncode == 124 and re.search(r"ran past 10 s and was stopped \(last: \d+ s: cell 0 started\)",
                                                 done.stdout), done.stdout
    pid = int(pid_file.read_text())
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, 9)
        raise AssertionError("the kernel outlived its stopped notebook")


def test_gpu_check_tests_step_does_not_need_nbval():
    """The lent machine has no nbval: the tests step must not inherit the project's nbval options."""
    import subprocess

    cmd = _gpu_check().plan()[0][1]
    done = subprocess.run([*cmd, "-p", "no:nbval", "--collect-only"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def test_gpu_check_rehearses_on_the_cpu(tmp_path, monkeypatch):
    """`--cpu` runs the same plan here (a rehearsal of the lent machine's environment) and writes the report."""
    import nbformat

    gpu_check = _gpu_check()
    nb_path = tmp_path / "ok.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import advlab\nassert advlab")]),
                   nb_path)
    monkeypatch.setattr(gpu_check, "notebooks", lambda: [nb_path])
    monkeypatch.setattr(gpu_check, "TESTS", ["tests/test_models.py"])
    out = tmp_path / "out"
    assert gpu_check.main(["--cpu", "--workers", "1", "--out", str(out)]) == 0
    report = (out / "gpu-check.md").read_text()
    assert report.startswith("# GPU check: no GPU, a rehearsal on the CPU")
    rows = [r for r in report.splitlines() if r.startswith("| ") and not r.startswith("| step")]
    assert [r.split(" | ")[1] for r in rows] == ["ok", "ok", "ok"], report
    assert not (out / "benchmarks-gpu.md").exists()  # the --quick table of a rehearsal is not a benchmark
    assert "passed" in (out / "gpu-tests.txt").read_text()


def test_notebook_times_reports_every_code_cell(tmp_path):
    import importlib.util

    import nbformat

    spec = importlib.util.spec_from_file_location("notebook_times", ROOT / "benchmarks" / "notebook_times.py")
    nt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(nt)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# t"),
                                         nbformat.v4.new_code_cell("import time\ntime.sleep(0.3)"),
                                         nbformat.v4.new_code_cell("x = 1")])
    path = tmp_path / "t.ipynb"
    nbformat.write(nb, path)
    before = path.read_bytes()
    wall, cells = nt.time_notebook(path, timeout=60)
    assert [i for i, _, _ in cells] == [1, 2] and cells[0][2] == "import time"
    assert cells[0][1] >= 0.3 > cells[1][1] and wall >= cells[0][1]  # the sleeping cell is the slow one
    assert path.read_bytes() == before  # the notebook is not modified
    out = tmp_path / "times.md"
    assert nt.main([str(path), "--out", str(out)]) == 0 and "| t.ipynb |" in out.read_text()


def test_evaluation_benchmark_smoke():
    """advlab's default chain vs the torchattacks reference chain on a few images of the standard CNN (both break
    every image: the paired counts are zero and the Square floor is nothing, since no image ends robust)."""
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "evaluation.py"), "--n", "16", "--models",
                          "mnist-cnn", "--out", "-"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()  # the rows as they come (progress), then the table
    at = lines.index(next(r for r in lines if r.startswith("| model |")))
    header, row = lines[at], lines[at + 2]
    columns = [c.strip() for c in header.strip("|").split("|")]
    cells = dict(zip(columns, (c.strip() for c in row.strip("|").split("|")), strict=True))
    assert cells["model"] == "`mnist-cnn`" and cells["advlab default"] == cells["reference"] == "0.0%"
    assert cells["advlab robust, reference broke"] == cells["reference robust, advlab broke"] == "0"
    assert cells["Square floor"] == "0 s" and float(cells["best possible ratio"]) <= float(cells["time ratio"])
