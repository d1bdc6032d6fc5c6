"""A run's steering as a schedule: the live changes it accepted, each where the trainer applied it.

One line per place, as a person would write it and as `vae-visdom runs --steering RUN_DIR` prints it:

    epoch 1 step 40: lr=0.0003
    epoch 2 step 118: batch_size=256 beta=2
    step 3120: lr=3e-4

`step S` is after S optimizer steps. An epoch's end and the next epoch's first step are both at the same
step; the epoch tells them apart (commands that arrive during the test pass are applied at the epoch's
end, before the next epoch's lr schedule stage), so an exported line always names it; a line without
one applies at the first place the run reaches step S. The trainer feeds each change through its
controller with the source "planned" (Trainer.follow), so it is applied exactly where a live one is.
Torch-free: `vae-visdom runs` reads and prints it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from vae_visdom.config import ConfigError, parse_value, shown
from vae_visdom.train.controller import SETTINGS

PLANNED = "planned"  # the source of a change the trainer applies from a schedule
RESUME = "resume flags"  # the source of a value given with `train --resume`: applied where the run went on
LINE = re.compile(r"^(?:epoch\s+(\d+)\s*,?\s*)?step\s+(\d+)\s*:\s*(.*)$", re.IGNORECASE)
SHORT = {"bs": "batch_size", "batch": "batch_size", "log": "log_interval"}


@dataclass(frozen=True)
class Change:
    """Settings to change after `step` optimizer steps (at epoch `epoch`, when given)."""
    step: int
    values: dict[str, Any] = field(default_factory=dict)
    epoch: int | None = None

    def key(self) -> tuple[int, int]:
        return self.step, -1 if self.epoch is None else self.epoch


def parse_steering(text: str, where: str = "steering") -> list[Change]:
    """The changes of a schedule's text; ConfigError (naming the line) for anything it cannot read."""
    settings = SETTINGS
    changes = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = LINE.match(line)
        if m is None:
            raise ConfigError(f"{where}, line {number}: {shown(line)} is not `[epoch E] step S: name=value ...`")
        values: dict[str, Any] = {}
        for part in m.group(3).replace(",", " ").split():
            name, sep, value = part.partition("=")
            name = name.strip().lower().replace("-", "_")
            name = SHORT.get(name, name)
            if not sep or not value.strip():
                raise ConfigError(f"{where}, line {number}: {shown(part)} is not name=value")
            if name not in settings:
                raise ConfigError(f"{where}, line {number}: {shown(name)} is not a live setting; allowed: "
                                  f"{', '.join(settings)}")
            try:
                values[name] = parse_value(name, value)
            except ConfigError as err:
                raise ConfigError(f"{where}, line {number}: {err}") from None
        if not values:
            raise ConfigError(f"{where}, line {number}: no name=value after the colon")
        changes.append(Change(int(m.group(2)), values, None if m.group(1) is None else int(m.group(1))))
    return sorted(changes, key=Change.key)


def from_events(events: list[dict]) -> list[Change]:
    """The accepted live settings of a run's events.jsonl rows, grouped by where they were applied."""
    settings = SETTINGS
    grouped: dict[tuple[int, int], dict[str, Any]] = {}
    for ev in events:
        if ev.get("accepted") is not True or ev.get("name") not in settings:
            continue
        epoch, step = ev.get("epoch"), ev.get("step")
        if not isinstance(epoch, int) or not isinstance(step, int):
            continue
        grouped.setdefault((epoch, step), {})[ev["name"]] = ev.get("value")  # the last one there wins
    return sorted((Change(step, values, epoch) for (epoch, step), values in grouped.items()), key=Change.key)


def format_value(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)  # repr: the float read back bit for bit


def format_steering(changes: list[Change], about: str = "") -> str:
    """The schedule's text (parse_steering reads it back to the same changes)."""
    head = [f"# {about}"] if about else []
    head.append("# [epoch E] step S: name=value ...   (after S optimizer steps; vae-visdom train --steering FILE)")
    lines = [f"{'' if c.epoch is None else f'epoch {c.epoch} '}step {c.step}: "
             + " ".join(f"{k}={format_value(v)}" for k, v in c.values.items()) for c in changes]
    return "\n".join(head + lines) + "\n"
