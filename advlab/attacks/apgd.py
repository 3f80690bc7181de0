"""Auto-PGD (Croce & Hein, ICML 2020, Algorithm 1): PGD with momentum and a step size that adapts itself.

Fixed-step PGD needs its step size tuned per model; a wrong one makes a defense look robust. APGD starts with the
step ``η = 2ε`` and halves it, per sample, at checkpoints ``w_j`` (fractions 0, 0.22, 0.41, 0.57, ... of the
budget) when progress stalled: the objective rose in fewer than ``ρ = 75 %`` of the steps since the last
checkpoint, or the step was not halved at the last checkpoint and the best objective has not improved since. A
halving restarts the sample from its best point. Every step is

    z_{k+1} = P(x_k + η · dir(∇f(x_k)))
    x_{k+1} = P(x_k + α (z_{k+1} - x_k) + (1 - α)(x_k - x_{k-1}))        (α = 0.75; α = 1 on the first step)

with ``P`` the exact projection onto the ball ∩ box and ``dir`` the steepest-ascent direction of the norm.

Two objectives make the AutoAttack pair: ``loss="ce"`` (APGD-CE) and ``n_target_classes=k`` (APGD-T), which
attacks, in turn, the k classes other than y with the largest logits, each with the targeted DLR loss
``-(z_y - z_t) / (z_π1 - (z_π3 + z_π4)/2)``; both count a success as any prediction other than y.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from advlab.attacks.core import (
    Objective,
    attack_loss,
    check_loss,
    loss_and_grad,
    per_sample,
    project,
    random_start,
    steepest_direction,
    targeted_dlr_loss,
)
from advlab.attacks.engine import better
from advlab.attacks.result import AttackResult, finish
from advlab.attacks.tensors import (
    as_eps,
    check_inputs,
    check_logits,
    chunk_size,
    chunk_slices,
    eval_mode,
    logits_of,
    on_model_device,
    parse_norm,
)
from advlab.config import AdvlabError

RHO = 0.75  # a step size survives a checkpoint if the objective rose in more than ρ of the steps since the last one
MOMENTUM = 0.75  # α: weight of the new projected step against the previous move


def checkpoints(steps: int) -> list[int]:
    """Iterations (1-based counts of steps done) at which APGD checks its progress, for a budget of ``steps``.

    AutoAttack's schedule: the first check after ``max(⌊0.22·steps⌋, 1)`` steps, then intervals that shrink by
    ``max(⌊0.03·steps⌋, 1)`` down to ``max(⌊0.06·steps⌋, 1)``.
    """
    first, shortest, shrink = max(int(0.22 * steps), 1), max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)
    marks, at, length = [], 0, first
    while at + length <= steps:
        at += length
        marks.append(at)
        length = max(length - shrink, shortest)
    return marks


def _run(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: Tensor,
    p: float,
    steps: int,
    objective: Objective,
    start: bool,
    generator: torch.Generator | None,
    early_stop: bool,
    eot: int = 1,
    chunk: int | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """One APGD run on a batch; returns (x_out (N, *), best objective (N,), success (N,)).

    ``x_out`` is the first successful iterate where there is one, else the iterate with the highest objective.
    ``objective(logits, rows)`` receives the indices ``rows`` (into the batch) of the samples it is evaluated on.
    """
    n = len(x)
    dev = x.device
    delta0 = random_start(x, eps, p, generator) if start else torch.zeros_like(x)

    def feasible(z: Tensor, xa: Tensor, ea: Tensor) -> Tensor:
        return xa + project(z - xa, xa, ea, p)

    out = (x + delta0).clamp(0, 1)  # success iterate or best iterate, per sample
    out_loss = torch.full((n,), -math.inf, dtype=x.dtype, device=dev)
    out_succ = torch.zeros(n, dtype=torch.bool, device=dev)

    rows = torch.arange(n, device=dev)  # samples still attacked
    xa, ya, ea = x, y, eps
    x_k = out.clone()

    chunk_size(x, chunk)  # a bad chunk is refused before any work

    def evaluate_chunk(z: Tensor, r: Tensor, yc: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        value, grad, logits = loss_and_grad(model, z, yc, lambda lg, _y: objective(lg, r))
        for _ in range(eot - 1):  # expectation over the model's randomness: average value and gradient
            v, gr, logits = loss_and_grad(model, z, yc, lambda lg, _y: objective(lg, r))
            value, grad = value + v, grad.add_(gr)
        if eot > 1:
            value, grad = value / eot, grad.div_(eot)
        return value, grad, logits.argmax(1) != yc

    def evaluate(z: Tensor, r: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        # chunks of the samples still attacked
        parts = [evaluate_chunk(z[s], r[s], ya[s]) for s in chunk_slices(len(z), chunk_size(z, chunk))]
        return tuple(torch.cat(t) for t in zip(*parts)) if len(parts) > 1 else parts[0]

    f, g, succ = evaluate(x_k, rows)
    f_max, x_max, g_max = f.clone(), x_k.clone(), g.clone()
    x_prev = x_k.clone()
    f_prev = f.clone()
    eta = 2.0 * ea.clone()
    n_up = torch.zeros_like(f)
    f_max_at_check = f_max.clone()
    halved_at_check = torch.ones(n, dtype=torch.bool, device=dev)
    marks = set(checkpoints(steps))
    last_mark = 0

    def record(r: Tensor, z: Tensor, value: Tensor, s: Tensor) -> None:
        """Keep the first success, else the highest objective, in the outputs of rows r."""
        new_succ = s & ~out_succ[r]
        better = ~out_succ[r] & ~s & (value > out_loss[r])
        take = new_succ | better
        if bool(take.any()):
            out[r[take]] = z[take]
        out_loss[r] = torch.where(take | (out_succ[r] & (value > out_loss[r])), value, out_loss[r])
        out_succ[r] = out_succ[r] | s

    record(rows, x_k, f, succ)
    for i in range(steps):
        a = MOMENTUM if i > 0 else 1.0
        e = per_sample(eta, x_k)
        z = feasible(x_k + e * steepest_direction(g, p), xa, ea)
        x_new = feasible(x_k + a * (z - x_k) + (1 - a) * (x_k - x_prev), xa, ea)
        x_prev, x_k = x_k, x_new
        f, g, succ = evaluate(x_k, rows)
        record(rows, x_k, f, succ)
        n_up += (f > f_prev).to(f.dtype)
        f_prev = f
        up = f > f_max
        f_max = torch.where(up, f, f_max)
        m = per_sample(up, x_k)
        x_max = torch.where(m, x_k, x_max)
        g_max = torch.where(m, g, g_max)
        if i + 1 in marks:
            length = i + 1 - last_mark
            last_mark = i + 1
            stalled = n_up <= RHO * length
            no_gain = ~halved_at_check & (f_max_at_check >= f_max)
            halve = stalled | no_gain
            halved_at_check = halve
            f_max_at_check = f_max.clone()
            n_up.zero_()
            eta = torch.where(halve, eta / 2, eta)
            m = per_sample(halve, x_k)
            x_k = torch.where(m, x_max, x_k)
            g = torch.where(m, g_max, g)
        if early_stop:
            keep = ~out_succ[rows]
            if not bool(keep.all()):
                rows = rows[keep]
                if rows.numel() == 0:
                    break
                xa, ya, ea = xa[keep], ya[keep], ea[keep]
                x_k, x_prev, g, f_prev = x_k[keep], x_prev[keep], g[keep], f_prev[keep]
                f_max, x_max, g_max = f_max[keep], x_max[keep], g_max[keep]
                eta, n_up, f_max_at_check = eta[keep], n_up[keep], f_max_at_check[keep]
                halved_at_check = halved_at_check[keep]
    return out, out_loss, out_succ


@on_model_device
def apgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float | Tensor,
    norm: str | float = "inf",
    steps: int = 100,
    loss: str | Objective = "ce",
    n_target_classes: int = 0,
    restarts: int = 1,
    random_start: bool = True,
    generator: torch.Generator | None = None,
    early_stop: bool = False,
    eot: int = 1,
    chunk: int | None = None,
) -> AttackResult:
    """Auto-PGD: maximise the objective inside ``B_ε(x) ∩ [0, 1]^d`` with the adaptive step size of Croce & Hein.

    Args:
        model: returns logits (N, K) for inputs in [0, 1]; attacked in eval mode with frozen parameters.
        x: (N, *) inputs in [0, 1].
        y: (N,) **true** labels, also for APGD-T (the targets are chosen from the model's logits).
        eps: radius in pixel units, a scalar or a (N,) tensor.
        norm: ``"inf"`` or ``2`` (APGD-L1 needs a different, sparse step: use :func:`advlab.attacks.pgd` with
            ``norm=1``).
        steps: iterations per run (and per target class); checkpoints are fractions of it, so a longer run is not
            an extension of a shorter one.
        loss: ``"ce"`` (APGD-CE), ``"dlr"`` (APGD-DLR), ``"margin"`` or a callable ``fn(logits, y) -> (N,)``;
            ignored by APGD-T, which uses the targeted DLR loss.
        n_target_classes: 0 for the untargeted attack; k >= 1 for APGD-T against the k most likely other classes
            (AutoAttack uses 9 on 10-class data), each on the samples not yet broken.
        restarts: runs per target (or of the untargeted attack); each after the first runs only on survivors.
        random_start: start uniformly in the ball (clipped to the box); ``False`` starts at x.
        generator: ``torch.Generator`` for the random starts.
        early_stop: stop attacking a sample once it is misclassified (robust accuracy is the same, the cost lower).
        eot: gradient samples averaged per step (expectation over transformation) for a model that is random at
            inference (AutoAttack's "rand" version uses 20); 1 for a deterministic model.
        chunk: samples per forward/backward pass (``None``: the device's default, see
            :func:`advlab.attacks.tensors.chunk_size`; ``0``: the whole batch); the speed changes, not the result.

    Returns:
        :class:`~advlab.attacks.result.AttackResult` (success: the prediction is not y), re-checked in eval mode.
    """
    p = parse_norm(norm)
    if p == 1.0:
        raise AdvlabError("apgd supports norm='inf' and 2; for L1 use attacks.pgd(..., norm=1).")
    x, y = check_inputs(x, y)
    eps_t = as_eps(eps, x)
    loss = check_loss(loss)
    for name, value, low in (("steps", steps, 1), ("restarts", restarts, 1), ("n_target_classes", n_target_classes, 0),
                             ("eot", eot, 1)):
        if isinstance(value, bool) or int(value) != value or value < low:
            raise AdvlabError(f"{name} must be an integer >= {low}, got {value!r}.")
    with eval_mode(model):
        logits = logits_of(model, x, chunk)
        check_logits(logits, y)
        k_classes = logits.shape[1]
        if n_target_classes and n_target_classes > k_classes - 1:
            raise AdvlabError(f"n_target_classes={n_target_classes} but the model has only {k_classes - 1} classes "
                              f"other than the true one; use at most {k_classes - 1}.")
        if n_target_classes and k_classes < 4:
            raise AdvlabError(f"APGD-T's targeted DLR loss needs at least 4 classes (the model has {k_classes}); "
                              "use the untargeted attack with loss='ce' or 'margin'.")
        # targets: the other classes ranked by their clean logit (the true class masked out)
        ranked = logits.scatter(1, y[:, None], -math.inf).argsort(1, descending=True)
        best_x = x.clone()
        best_loss = torch.full((len(x),), -math.inf, dtype=x.dtype, device=x.device)
        best_succ = logits.argmax(1) != y  # already misclassified: nothing to attack
        runs = [(t, r) for t in range(max(n_target_classes, 1)) for r in range(int(restarts))]
        for t, _ in runs:
            idx = (~best_succ).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            if n_target_classes:
                targets = ranked[idx, t]
                yi = y[idx]

                def objective(lg: Tensor, rows: Tensor, yi: Tensor = yi, targets: Tensor = targets) -> Tensor:
                    return targeted_dlr_loss(lg, yi[rows], targets[rows])
            else:
                yi = y[idx]

                def objective(lg: Tensor, rows: Tensor, yi: Tensor = yi) -> Tensor:
                    return attack_loss(lg, yi[rows], loss)

            xr, lr, sr = _run(model, x[idx], y[idx], eps_t[idx], p, int(steps), objective, random_start, generator,
                              early_stop, int(eot), chunk)
            upd = better(lr, sr, best_loss[idx], best_succ[idx])
            best_x[idx[upd]] = xr[upd]
            best_loss[idx[upd]] = lr[upd]
            best_succ[idx] = sr
        return finish(model, x, best_x, y, p, chunk=chunk)
