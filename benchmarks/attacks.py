"""Benchmark advlab's attacks against the libraries people already use, on the same model, data and machine.

    python benchmarks/attacks.py                      # full run, writes docs/benchmarks.md
    python benchmarks/attacks.py --quick --out -      # a smoke run (tiny sizes), table to stdout

Cases: the fast-profile MNIST CNN (zoo "mnist-cnn") on 1,000 test images, and a CIFAR-size
PreAct-ResNet-18 with random weights (timing only) on 256 random images labelled by the model itself.
Attacks: PGD-L∞ (40 steps), PGD-L2 (40 steps), FGSM, CW-L2 and DeepFool. Each peer runs with the same
budget (steps, restarts, ε, step size). Peers are torchattacks, foolbox and ART, each where it imports.

The physical floor of an iterative attack is one forward plus one input-gradient backward per step; it
is timed on the same batch, and advlab's overhead is its time over steps × that floor.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import advlab
from advlab import attacks, data, models, zoo
from advlab.attacks.tensors import chunk_size, chunk_slices


@dataclass
class Row:
    case: str
    attack: str
    library: str
    seconds: float
    grad_steps: int  # gradient evaluations per image charged to the attack
    n: int
    robust_accuracy: float | None = None
    median_l2: float | None = None
    over: float | None = None  # PGD: best time / best time of the floor loop over the same reps
    paired: list[float] | None = None  # PGD, per rep: this row's time / the floor loop timed just before it
    over_chunk: float | None = None  # PGD: best time / best time of the best-chunk floor loop

    @property
    def throughput(self) -> float:
        return self.n * self.grad_steps / self.seconds


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], Tensor], device: torch.device) -> tuple[Tensor, float]:
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    return out.detach(), time.perf_counter() - start


def floor_loop(model: nn.Module, x: Tensor, y: Tensor, steps: int, chunk: int = 0) -> Tensor:
    """``steps`` × (one forward + one input-gradient backward) over ``x`` in chunks of ``chunk`` images (0: the whole
    batch): the physical floor of a ``steps``-step attack at that chunk size."""
    size = chunk_size(x, chunk)
    for _ in range(steps):
        for s in chunk_slices(len(x), size):
            xr = x[s].clone().requires_grad_(True)
            grad = torch.autograd.grad(F.cross_entropy(model(xr), y[s]), xr)[0]
    return grad


def floor_chunks(x: Tensor) -> list[int]:
    """The chunk sizes timed for the best-chunk floor: advlab's default on this device, half and twice it."""
    d = chunk_size(x)
    return sorted({max(d // 2, 1), d, min(2 * d, len(x))})


def by_hand(fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, y: Tensor, chunk: int) -> Tensor:
    """A library's attack called on consecutive chunks of the batch (what a user can do by hand)."""
    return torch.cat([fn(x[s], y[s]) for s in chunk_slices(len(x), chunk_size(x, chunk))])


def summarize(model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor) -> tuple[float, float | None]:
    with torch.no_grad():
        pred = torch.cat([model(x_adv[i : i + 500]).argmax(1) for i in range(0, len(x_adv), 500)])
    fooled = pred != y
    norms = (x_adv - x).flatten(1).norm(dim=1)
    med = norms[fooled].median().item() if fooled.any() else None
    return (~fooled).float().mean().item(), med


class Bf16(nn.Module):
    """``model`` run under ``torch.autocast`` in bfloat16, returning float32 logits: what the hardware gives when the
    arithmetic is allowed to change (CPUs with AMX or AVX-512 BF16, GPUs). Not advlab's default: the attack's gradients
    and its choice of the best iterate are then bfloat16 approximations. The row's robust accuracy is still counted
    by the float32 model (``summarize``)."""

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        super().__init__()
        self.model, self.device_type = model, device.type

    def forward(self, x: Tensor) -> Tensor:
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            return self.model(x).float()


def fast_bf16(device: torch.device) -> bool:
    """Whether ``device`` has bfloat16 arithmetic in hardware (else autocast would only emulate it, slowly)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def peers(model: nn.Module, device: torch.device, shape: tuple[int, ...]) -> dict[str, dict[str, Callable]]:
    """Per library, a dict attack-name -> fn(x, y, cfg) returning x_adv. Libraries that fail to import are left out."""
    out: dict[str, dict[str, Callable]] = {}
    try:
        import torchattacks as ta

        out["torchattacks"] = {
            "PGD-Linf": lambda x, y, c: ta.PGD(model, eps=c["eps_inf"], alpha=c["alpha_inf"], steps=c["steps"])(x, y),
            "PGD-L2": lambda x, y, c: ta.PGDL2(model, eps=c["eps_2"], alpha=c["alpha_2"], steps=c["steps"])(x, y),
            "FGSM": lambda x, y, c: ta.FGSM(model, eps=c["eps_inf"])(x, y),
            "CW-L2": lambda x, y, c: ta.CW(model, c=1.0, kappa=0, steps=c["cw_steps"] * c["cw_search"], lr=0.01)(x, y),
            "DeepFool": lambda x, y, c: ta.DeepFool(model, steps=c["df_steps"], overshoot=0.02)(x, y),
        }
    except Exception as err:  # noqa: BLE001
        print(f"torchattacks unavailable: {err}", file=sys.stderr)
    try:
        import foolbox as fb

        fmodel = fb.PyTorchModel(model, bounds=(0, 1), device=device)

        def run_fb(attack, eps):
            return lambda x, y, c: attack(c)(fmodel, x, y, epsilons=eps(c))[1]

        out["foolbox"] = {
            "PGD-Linf": run_fb(
                lambda c: fb.attacks.LinfPGD(abs_stepsize=c["alpha_inf"], steps=c["steps"]), lambda c: c["eps_inf"]
            ),
            "PGD-L2": run_fb(
                lambda c: fb.attacks.L2PGD(abs_stepsize=c["alpha_2"], steps=c["steps"]), lambda c: c["eps_2"]
            ),
            "FGSM": run_fb(lambda c: fb.attacks.FGSM(random_start=False), lambda c: c["eps_inf"]),
            "CW-L2": run_fb(
                lambda c: fb.attacks.L2CarliniWagnerAttack(
                    binary_search_steps=c["cw_search"], steps=c["cw_steps"], initial_const=1.0
                ),
                lambda c: None,
            ),
            "DeepFool": run_fb(
                lambda c: fb.attacks.L2DeepFoolAttack(steps=c["df_steps"], overshoot=0.02, candidates=10),
                lambda c: None,
            ),
        }
    except Exception as err:  # noqa: BLE001
        print(f"foolbox unavailable: {err}", file=sys.stderr)
    try:
        from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent
        from art.estimators.classification import PyTorchClassifier

        clf = PyTorchClassifier(
            model,
            loss=nn.CrossEntropyLoss(),
            input_shape=shape,
            nb_classes=10,
            clip_values=(0.0, 1.0),
            device_type="gpu" if device.type == "cuda" else "cpu",
        )

        def run_art(make):
            return lambda x, y, c: torch.as_tensor(make(c).generate(x.cpu().numpy(), y=y.cpu().numpy()), device=device)

        out["ART"] = {
            "PGD-Linf": run_art(
                lambda c: ProjectedGradientDescent(
                    clf,
                    norm="inf",
                    eps=c["eps_inf"],
                    eps_step=c["alpha_inf"],
                    max_iter=c["steps"],
                    batch_size=c["n"],
                    verbose=False,
                )
            ),
            "FGSM": run_art(lambda c: FastGradientMethod(clf, norm="inf", eps=c["eps_inf"], batch_size=c["n"])),
        }
    except Exception as err:  # noqa: BLE001
        print(f"ART unavailable: {err}", file=sys.stderr)
    return out


def advlab_attacks() -> dict[str, Callable]:
    return {
        "PGD-Linf": lambda m, x, y, c: (
            attacks.pgd(m, x, y, c["eps_inf"], "inf", steps=c["steps"], step_size=c["alpha_inf"],
                        chunk=c.get("chunk")).x_adv
        ),
        "PGD-L2": lambda m, x, y, c: (
            attacks.pgd(m, x, y, c["eps_2"], 2, steps=c["steps"], step_size=c["alpha_2"], chunk=c.get("chunk")).x_adv
        ),
        "FGSM": lambda m, x, y, c: attacks.fgsm(m, x, y, c["eps_inf"]).x_adv,
        "CW-L2": lambda m, x, y, c: (
            attacks.cw_l2(m, x, y, binary_search_steps=c["cw_search"], steps=c["cw_steps"]).x_adv
        ),
        "DeepFool": lambda m, x, y, c: attacks.deepfool(m, x, y, norm=2, overshoot=0.02, max_iter=c["df_steps"]).x_adv,
    }


def grad_steps(attack: str, cfg: dict) -> int:
    if attack.startswith("PGD"):
        return cfg["steps"]
    return {"FGSM": 1, "CW-L2": cfg["cw_steps"] * cfg["cw_search"], "DeepFool": cfg["df_steps"]}[attack]


def run_case(
    case: str, model: nn.Module, x: Tensor, y: Tensor, cfg: dict, which: list[str], device: torch.device
) -> list[Row]:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    rows: list[Row] = []
    libs = peers(model, device, tuple(x.shape[1:]))
    for attack in which:
        n = cfg["n_df"] if attack in ("DeepFool", "CW-L2") else len(x)
        xs, ys = x[:n], y[:n]
        cfg_n = {**cfg, "n": n}
        fns = [("advlab", lambda xs=xs, ys=ys, a=attack, c=cfg_n: advlab_attacks()[a](model, xs, ys, c))]
        if attack.startswith("PGD"):
            # the same attack on the whole batch at once (chunk=0), then stopping each sample at its first success
            fns.append(("advlab whole batch",
                        lambda xs=xs, ys=ys, a=attack, c={**cfg_n, "chunk": 0}: advlab_attacks()[a](model, xs, ys, c)))
            if fast_bf16(device):
                bf16 = Bf16(model, device)
                fns.append(("advlab, model in bf16", lambda xs=xs, ys=ys, a=attack, c=cfg_n, m=bf16:
                            advlab_attacks()[a](m, xs, ys, c)))
            norm = "inf" if attack == "PGD-Linf" else 2
            e, a = (cfg["eps_inf"], cfg["alpha_inf"]) if norm == "inf" else (cfg["eps_2"], cfg["alpha_2"])
            for name, start in (("advlab early_stop", True), ("advlab BIM early_stop", False)):
                # BIM: the same run started at x instead of uniformly in the ball (in 784 or 3072 dimensions a
                # uniform L2 start lies at radius ≈ ε, in a random direction that the steps must first undo)
                fns.append(
                    (
                        name,
                        lambda xs=xs, ys=ys, e=e, a=a, norm=norm, start=start: (
                            attacks.pgd(
                                model,
                                xs,
                                ys,
                                e,
                                norm,
                                steps=cfg["steps"],
                                step_size=a,
                                random_start=start,
                                early_stop=True,
                            ).x_adv
                        ),
                    )
                )
        fns += [
            (lib, lambda f=table[attack], xs=xs, ys=ys, c=cfg_n: f(xs, ys, c))
            for lib, table in libs.items()
            if attack in table
        ]
        if attack.startswith("PGD") and attack in libs.get("torchattacks", {}):
            # torchattacks called by hand on chunks of advlab's default size: what batch size alone gives
            f = libs["torchattacks"][attack]
            fns.append(("torchattacks chunked",
                        lambda f=f, xs=xs, ys=ys, c=cfg_n: by_hand(lambda u, v, f=f, c=c: f(u, v, c), xs, ys, None)))
        # rep-major: every rep runs every library once, so a slow minute on this shared machine hits them all
        runs: dict[str, list[tuple[Tensor, float]]] = {lib: [] for lib, _ in fns}
        floors: list[float] = []
        chunk_floors: list[float] = []  # per rep, the best over floor_chunks
        for _ in range(cfg["reps"]):
            if attack.startswith("PGD"):  # the floor loops, timed again at every rep
                floors.append(timed(lambda xs=xs, ys=ys: floor_loop(model, xs, ys, cfg["steps"]), device)[1])
                chunk_floors.append(min(
                    timed(lambda xs=xs, ys=ys, c=c: floor_loop(model, xs, ys, cfg["steps"], c), device)[1]
                    for c in floor_chunks(xs)
                ))
            for lib, fn in fns:
                with contextlib.redirect_stdout(io.StringIO()):
                    runs[lib].append(timed(fn, device))
        for lib, _ in fns:
            seconds = min(t for _, t in runs[lib])  # noise only ever adds time: best of reps, as timeit does
            x_adv = runs[lib][-1][0]
            acc, med = summarize(model, xs, ys, x_adv.to(device))
            over = seconds / min(floors) if floors else None
            over_chunk = seconds / min(chunk_floors) if chunk_floors else None
            paired = [t / f for (_, t), f in zip(runs[lib], chunk_floors, strict=True)] if floors else None
            rows.append(Row(case, attack, lib, seconds, grad_steps(attack, cfg), n, acc, med, over=over, paired=paired,
                            over_chunk=over_chunk))
            print(f"{case:10s} {attack:9s} {lib:13s} {seconds:8.2f}s acc={acc:.3f} med={med}", file=sys.stderr)
    return rows


def table(rows: list[Row], device: torch.device, cmd: str) -> str:
    lines = [
        "# Attack benchmark",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"device `{device}`; torch {torch.__version__}, advlab {advlab.__version__}. Command: `{cmd}`.",
        "",
        "Time ratio = the row's time / advlab's time on the same attack, model, images and budget (> 1: slower "
        "than advlab). `advlab early_stop` is the same PGD, stopping each sample at its first success (same robust "
        "accuracy; a weak model costs far fewer steps); `advlab BIM early_stop` is that run started at x instead of a "
        "random point of the ball. "
        "Times are the best of `--reps` (MNIST) or `--resnet-reps` (ResNet-18) runs of each row (noise only adds "
        "time; `timeit` does the same), the libraries taking turns within each rep. "
        "Throughput counts images × gradient steps per second. Two floors: steps × (one forward + one "
        "input-gradient backward) on the whole batch, and the same loop on chunks of the best of three chunk sizes "
        "(advlab's default on this device, half and twice it; `benchmarks/chunks.py` sweeps more). advlab splits its "
        "passes into that default chunk (`advlab.attacks.tensors.chunk_size`); `advlab whole batch` is the same "
        "attack with `chunk=0`; `torchattacks chunked` is torchattacks called by hand on chunks of the same size. "
        "For PGD the floor loops run once per rep, just before the libraries' runs, and their best times are used, "
        "because this shared machine's speed drifts by ±10–20% between minutes. "
        "The whole evaluation (advlab's default `eval.robust_accuracy` against an AutoAttack-grade reference chain, "
        "time and robust accuracy image by image) is benchmarked in `docs/evaluation.md` "
        "(`benchmarks/evaluation.py`).",
        "",
        "| case | attack | library | n | time (s) | img·steps/s | time ratio to advlab | robust acc. "
        "| median L2 of successes | time / whole-batch floor | time / best-chunk floor |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ours = next(o for o in rows if o.case == r.case and o.attack == r.attack and o.library == "advlab")
        ratio = f"{r.seconds / ours.seconds:.2f}"
        over = f"{r.over:.2f}×" if r.over is not None else ""
        over_chunk = f"{r.over_chunk:.2f}×" if r.over_chunk is not None else ""
        med = f"{r.median_l2:.3f}" if r.median_l2 is not None else "—"
        lines.append(
            f"| {r.case} | {r.attack} | {r.library} | {r.n} | {r.seconds:.2f} | {r.throughput:,.0f} | {ratio} | "
            f"{r.robust_accuracy:.3f} | {med} | {over} | {over_chunk} |"
        )
    return "\n".join(lines + targets(rows)) + "\n"


def targets(rows: list[Row]) -> list[str]:
    """The issue's two PGD targets, read off the rows above (so a re-run re-states them honestly)."""
    out = [
        "",
        "## PGD against the targets",
        "",
        "Targets, at a fixed budget with no early stop: advlab PGD ≥ 1.5× the throughput of torchattacks as users "
        "call it (the whole batch) at equal robust accuracy, and within 1.10× of the best-chunk floor. "
        "`torchattacks chunked` shows how much of the gain comes from the chunk size alone. `early_stop` does less "
        "work (each sample stops at its first success; the same robust accuracy up to the randomness of the start) "
        "and is shown for scale, not counted against the targets. A full-budget advlab run costs steps × (forward + "
        "input-gradient backward) plus two forwards by design (the last iterate, and the eval-mode re-check of what "
        "it returns) and a one-input probe of the model. `advlab, model in bf16` (where the hardware has bfloat16 "
        "arithmetic) is the same attack on the model run under `torch.autocast` in bfloat16: not the floor's "
        "arithmetic, so it is shown beside the targets, not counted for them, with the robust accuracy that the "
        "float32 model gives on its outputs.",
        "",
        "The paired column is the median over reps of advlab's time / the best-chunk floor timed just before it in "
        "the same rep (less exposed to the machine's drift), with its range. `1.5× torchattacks needs` is "
        "torchattacks' time / 1.5 over the best-chunk floor: where it is under 1.00×, the 1.5× target asks for less "
        "time than the model's own forward + input-gradient backward at its best chunk size, which no attack loop "
        "around that model can give. `docs/chunks.md` (`benchmarks/chunks.py`) splits that pass into its layers.",
        "",
        "| case | attack | advlab / best-chunk floor (best / best) | paired, median [min–max] "
        "| 1.5× torchattacks needs (time / best-chunk floor) | advlab vs torchattacks (throughput) "
        "| advlab vs torchattacks chunked | advlab vs its own whole batch "
        "| early_stop vs torchattacks | robust acc. advlab / torchattacks / torchattacks chunked "
        "| bf16 model vs torchattacks (robust acc.) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case in dict.fromkeys(r.case for r in rows):
        for attack in ("PGD-Linf", "PGD-L2"):
            got = {r.library: r for r in rows if r.case == case and r.attack == attack}
            need = ("advlab", "advlab whole batch", "advlab early_stop", "torchattacks", "torchattacks chunked")
            if not set(need) <= got.keys():
                continue
            ours, whole, fast, ta, tac = (got[k] for k in need)
            pr = sorted(ours.paired)  # timed against the floor at every rep
            paired = f"{pr[len(pr) // 2]:.2f}× [{pr[0]:.2f}–{pr[-1]:.2f}]"
            speed = " | ".join(f"{r.seconds / s.seconds:.2f}×" for r, s in ((ta, ours), (tac, ours), (whole, ours),
                                                                             (ta, fast)))
            accs = " / ".join(f"{r.robust_accuracy:.3f}" for r in (ours, ta, tac))
            bf = got.get("advlab, model in bf16")
            bf16 = "" if bf is None else f"{ta.seconds / bf.seconds:.2f}× ({bf.robust_accuracy:.3f})"
            needs = f"{ta.over_chunk / 1.5:.2f}×"  # torchattacks' time / 1.5, over the same best-chunk floor
            out.append(f"| {case} | {attack} | {ours.over_chunk:.2f}× | {paired} | {needs} | {speed} | {accs} "
                       f"| {bf16} |")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default=None, help="cpu or cuda (default: advlab.device())")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of the script, not a benchmark")
    parser.add_argument("--cases", default="mnist,resnet", help="comma-separated: mnist, resnet")
    parser.add_argument("--reps", type=int, default=3, help="runs per MNIST row; the best time is reported")
    parser.add_argument("--resnet-reps", type=int, default=1, help="runs per ResNet-18 row (several minutes each)")
    parser.add_argument("--attacks", default=None, help="comma-separated subset, e.g. PGD-Linf,PGD-L2 (default: all)")
    parser.add_argument("--out", default="docs/benchmarks.md", help="markdown output file, or - for stdout")
    args = parser.parse_args(argv)
    chosen = None if args.attacks is None else [a.strip() for a in args.attacks.split(",")]
    device = torch.device(args.device) if args.device else advlab.device()
    advlab.seed_everything(0, deterministic=False)
    rows: list[Row] = []
    q = args.quick
    if "mnist" in args.cases:
        x, y, _ = data.load("mnist", "test", n=16 if q else 1000)
        model = zoo.load("mnist-cnn", progress=False).to(device)
        steps = 2 if q else 40
        cfg = {
            "eps_inf": 0.3,
            "alpha_inf": 2.5 * 0.3 / steps,
            "eps_2": 2.0,
            "alpha_2": 2.5 * 2.0 / steps,
            "steps": steps,
            "cw_search": 2 if q else 5,
            "cw_steps": 2 if q else 50,
            "df_steps": 2 if q else 50,
            "n_df": 8 if q else 200,
            "reps": 1 if q else args.reps,
        }
        which = [a for a in advlab_attacks() if chosen is None or a in chosen]
        rows += run_case("MNIST CNN", model, x.to(device), y.to(device), cfg, which, device)
    if "resnet" in args.cases:
        advlab.seed_everything(0, deterministic=False)
        model = models.preact_resnet18().to(device).eval()
        n = 8 if q else 256
        x = torch.rand(n, 3, 32, 32, device=device)
        with torch.no_grad():
            y = model(x).argmax(1)
        steps = 2 if q else 10
        cfg = {
            "eps_inf": 8 / 255,
            "alpha_inf": 2.5 * 8 / 255 / steps,
            "eps_2": 0.5,
            "alpha_2": 2.5 * 0.5 / steps,
            "steps": steps,
            "cw_search": 1,
            "cw_steps": 2 if q else 20,
            "df_steps": 2 if q else 20,
            "n_df": 8 if q else 32,
            "reps": 1 if q else args.resnet_reps,  # a minute or more per run on CPU
        }
        which = list(advlab_attacks()) if device.type == "cuda" or q else ["PGD-Linf", "PGD-L2", "FGSM"]
        which = [a for a in which if chosen is None or a in chosen]
        rows += run_case("ResNet-18", model, x, y, cfg, which, device)
    md = table(rows, device, "python benchmarks/attacks.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    if args.out == "-":
        print(md)
    else:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(md)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
