"""The cascade's falsifier: margin-loss PGD with restarts, targeted where it pays, batched.

Cross-entropy PGD (the original ``adv_whitebox``) loses its gradient where the softmax saturates: a
sample whose true logit leads by ~100 has a float32 cross-entropy gradient of exactly 0, and sign-PGD
then never leaves its random start, however close a counterexample is. The margin loss
``max_{i≠y} z_i − z_y`` (Carlini & Wagner 2017) has a gradient wherever the network has one, and a
*targeted* margin ``z_t − z_y`` towards one runner-up class finds counterexamples the untargeted one
misses when the best direction changes class along the way (Croce & Hein 2020 use both).

Restart ``r`` (0-based) of ``restarts`` uses objective ``r mod (targets + 1)``: 0 = untargeted margin,
``k ≥ 1`` = targeted towards the sample's k-th most likely wrong class at the clean input. The cost per
restart equals one untargeted PGD run, so the default (5 restarts, 3 targets: untargeted, top-1, top-2,
top-3, untargeted) costs what 5 cross-entropy restarts cost. Each restart runs only on the samples still
unbroken, and inside a restart a sample leaves the batch as soon as its best point is a confirmed
counterexample (checked every ``check_every`` steps; ``confirm`` decides, in float32 and float64, inside
the ε-box; see :func:`ctbench.certify.stages.confirmed_counterexample`): the search costs what the robust
samples cost, not ``restarts × steps`` for every sample. ``check_every=0`` checks at the end of each restart
only (the search before issue 25; same counterexamples up to where a sample's first confirmed point is
found, so its recorded margin is that point's, not the lowest the full restart would reach).

``loss="ce"`` reproduces the original falsifier (untargeted cross-entropy, ``targets`` ignored).
"""

from __future__ import annotations

import torch

from ctbench.attacks.pgd import pgd_attack


def runner_up_classes(logits: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """(B, k) int64: the k most likely classes other than y, most likely first."""
    masked = logits.masked_fill(torch.nn.functional.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return masked.topk(min(k, logits.shape[1] - 1), dim=1).indices


def falsify(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    lower: torch.Tensor,
    upper: torch.Tensor,
    confirm,
    *,
    steps: int,
    restarts: int,
    targets: int = 3,
    loss: str = "margin",
    check_every: int = 10,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Search each sample's box for a counterexample.

    Args:
        model: eval-mode classifier; x (B, *in) clean inputs; y (B,) labels.
        lower, upper: (B, *in) float32 box inside the ε-ball (attack points stay in it).
        confirm: ``confirm(x_adv, idx) -> (broken (n,) bool, margin (n,) float64)`` for the samples
            ``idx`` (LongTensor into the batch): the cascade's float32 + float64 check.
        steps, restarts: PGD steps per restart, number of restarts (≥ 1).
        targets: runner-up classes attacked with a targeted margin (0: untargeted only).
        loss: ``"margin"`` (default) or ``"ce"`` (the original, untargeted).
        check_every: steps between checks of the samples' best points inside a restart (0: none).

    Returns:
        ``(broken (B,) bool, best point (B, *in), its margin (B,) float64)``: per sample the confirmed
        counterexample if one was found, else the point of smallest margin over all restarts.
    """
    B = x.shape[0]
    device = x.device
    with torch.no_grad():
        logits = model(x)
    targets = 0 if loss == "ce" else max(0, min(int(targets), logits.shape[1] - 1))
    order = runner_up_classes(logits, y, targets) if targets else None
    everyone = torch.arange(B, device=device)
    broken, best_m = confirm(x, everyone)  # the clean point itself (misclassified samples never get here)
    best_x = x.detach().clone()
    best_m = best_m.to(device)
    broken = broken.to(device)
    for r in range(restarts):
        idx = (~broken).nonzero().flatten()
        if idx.numel() == 0:
            break
        k = r % (targets + 1)
        target = order[idx, k - 1] if k else None
        done = (lambda points, sub, idx=idx: confirm(points, idx[sub])[0]) if check_every else None
        x_adv = pgd_attack(
            model, x[idx], y[idx], lower[idx], upper[idx], steps=steps, restarts=1, loss=loss, target=target,
            done=done, check_every=check_every or 1,
        )
        hit, m = confirm(x_adv, idx)
        hit, m = hit.to(device), m.to(device)
        better = hit | (m < best_m[idx])
        sel = idx[better]
        best_x[sel] = x_adv[better]
        best_m[sel] = m[better]
        broken[idx[hit]] = True
    return broken, best_x, best_m
