"""Learning-rate schedules by name (`--lr-schedule`): constant, Burda et al.'s staged decay, and a cosine decay."""
from __future__ import annotations

import math

import torch

# Burda, Grosse & Salakhutdinov (2016), "Importance Weighted Autoencoders", appendix C: Adam with
# beta1 0.9, beta2 0.999, eps 1e-4; for i = 0..7, lr 1e-3 * 10^(-i/7) for 3^i epochs (3280 in all).
BURDA_STAGES = 8
BURDA_EPOCHS = sum(3 ** i for i in range(BURDA_STAGES))  # 3280
BURDA_ADAM = dict(betas=(0.9, 0.999), eps=1e-4)


def stage_ends(total_epochs: int, stages: int = BURDA_STAGES) -> list[int]:
    """Last epoch (1-based) of each stage: geometric stage lengths (ratio r) that sum to total_epochs.

    r = 3 gives the paper's 1, 4, 13, 40, 121, 364, 1093, 3280; a shorter total keeps the shape with a
    smaller ratio (r -> 1: equal stages). Every stage is at least one epoch long, none shorter than the one before.
    """
    if total_epochs < stages:
        raise ValueError(f"{total_epochs} epochs cannot hold {stages} stages")

    def total(r: float) -> float:
        return float(stages) if r == 1.0 else (r ** stages - 1) / (r - 1)

    lo, hi = 1.0, 2.0
    while total(hi) < total_epochs:
        hi *= 2
    for _ in range(200):  # bisection: total(r) grows with r
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if total(mid) < total_epochs else (lo, mid)
    r = (lo + hi) / 2
    ends: list[int] = []
    cum = 0.0
    for i in range(stages):
        cum += r ** i
        ends.append(max(round(cum * total_epochs / total(r)), (ends[-1] + 1) if ends else 1))
    ends[-1] = total_epochs
    lengths = sorted(b - a for a, b in zip([0] + ends, ends))  # rounding may not leave them growing
    return [sum(lengths[:i + 1]) for i in range(stages)]


COSINE_FLOOR = 0.01  # cosine:E ends at 1% of the lr it starts from, unless cosine:E:F says otherwise


def cosine_factor(epoch: int, total: int, floor: float = COSINE_FLOOR) -> float:
    """Half a cosine from 1 in epoch 1 down to `floor` in epoch `total` (and after it)."""
    t = min(max(epoch - 1, 0), total - 1) / (total - 1)
    return floor + (1.0 - floor) * (1.0 + math.cos(math.pi * t)) / 2.0


def lr_factor(schedule: str, epoch: int) -> float:
    """The schedule's multiplier of the base lr in `epoch` (1-based); past the last stage, the last one's."""
    if schedule == "constant":
        return 1.0
    if schedule.startswith("cosine:"):
        parts = schedule.split(":")
        return cosine_factor(epoch, int(parts[1]), float(parts[2]) if len(parts) > 2 else COSINE_FLOOR)
    total = BURDA_EPOCHS if schedule == "burda" else int(schedule.split(":", 1)[1])
    ends = stage_ends(total)
    stage = next((i for i, end in enumerate(ends) if epoch <= end), len(ends) - 1)
    return 10.0 ** (-stage / 7.0)


def configure_optimizer(schedule: str, optimizer: torch.optim.Optimizer) -> None:
    """Every schedule but constant comes with Burda et al.'s Adam settings (betas, eps 1e-4), the settings of the
    benchmark these schedules are for; other optimizers are left as they are."""
    if schedule != "constant" and isinstance(optimizer, torch.optim.Adam):
        for group in optimizer.param_groups:
            group.update(BURDA_ADAM)


def enter_epoch(schedule: str, optimizer: torch.optim.Optimizer, epoch: int) -> None:
    """Rescale every group's lr by factor(epoch) / factor(epoch - 1) as `epoch` starts.

    The lr in force (the configured one, or the last one typed into the control panel) is the
    schedule's current level: the panel rescales the schedule and later stages keep dividing it.
    Stateless, so a resumed run continues the same way.
    """
    if schedule == "constant" or epoch <= 1:
        return
    ratio = lr_factor(schedule, epoch) / lr_factor(schedule, epoch - 1)
    if not math.isclose(ratio, 1.0):
        for group in optimizer.param_groups:
            group["lr"] = group["lr"] * ratio
