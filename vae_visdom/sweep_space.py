"""What a sweep searches: each swept flag is a list (a grid axis) or a range (sampled), checked by train's rules.

    --lr 1e-3,3e-4        a list: every value is tried (the grid is the product of the lists)
    --lr log:1e-4:1e-2    a range sampled log-uniformly (random search, --samples draws)
    --beta 0.5:4          a range sampled uniformly; whole-number flags (batch size) draw whole numbers

Both ends of a range, and every list value, pass config.RULES (parse_value) before anything starts,
so a value `train` refuses is refused here with the same words. Nothing here imports Ray or torch:
sweep_ray.py turns a Space into Ray Tune's search space.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from vae_visdom.config import MODEL_NAMES, OPTIMIZERS, RULES, ConfigError, parse_value

# swept flag -> its option; the order is the order of the values in run names
SWEPT = {"lr": "--lr", "batch_size": "--batch-size", "epochs": "--epochs", "latent_dim": "--latent-dim",
         "optimizer": "--optimizer", "model": "--model", "beta": "--beta"}
CHOICES = {"optimizer": OPTIMIZERS, "model": MODEL_NAMES}
RANGEABLE = ("lr", "batch_size", "beta", "latent_dim", "epochs")  # numbers: a range makes sense
MUTABLE = ("lr", "beta", "batch_size")  # live settings PBT may change in a running trial


@dataclass(frozen=True)
class Range:
    """lo..hi (both allowed by the rule), sampled uniformly or log-uniformly; whole numbers for integer flags."""

    name: str
    lo: float
    hi: float
    log: bool
    integer: bool

    def clip(self, value: float) -> Any:
        """`value` brought into lo..hi (and rounded for whole-number flags): where PBT's perturbations stay."""
        value = min(max(value, self.lo), self.hi)
        return int(round(value)) if self.integer else float(value)

    def __str__(self) -> str:
        return f"{'log:' if self.log else ''}{self.lo:g}:{self.hi:g}"


def parse_list(name: str, text: str) -> list[Any]:
    """'1e-3, 3e-4' -> [0.001, 0.0003] under the rules of `name` (config.RULES, or the choices); duplicates dropped."""
    items = [t.strip() for t in str(text).split(",")]
    if not all(items):
        raise ConfigError(f"{name}: empty value in the list {text!r}; give values separated by commas")
    choices = CHOICES.get(name)
    values = []
    for item in items:
        if choices is not None:
            if item.lower() not in choices:
                raise ConfigError(f"{name}: unknown value {item!r}; allowed: {', '.join(choices)}")
            value: Any = item.lower()
        else:
            value = parse_value(name, item)
        if value not in values:
            values.append(value)
    return values


def parse_range(name: str, text: str) -> Range:
    """'log:1e-4:1e-2' or '0.5:4' -> Range, each end checked by the flag's rule; ConfigError otherwise."""
    body = text.strip()
    log = body.lower().startswith("log:")
    if log:
        body = body[4:]
    parts = body.split(":")
    if name not in RANGEABLE:
        raise ConfigError(f"{name}: a range ({text!r}) applies only to {', '.join(RANGEABLE)}; give a comma list")
    if len(parts) != 2 or not all(p.strip() for p in parts):
        raise ConfigError(f"{name}: {text!r} is not a range; give LO:HI or log:LO:HI (e.g. log:1e-4:1e-2)")
    lo, hi = (parse_value(name, p.strip()) for p in parts)
    if not lo < hi:
        raise ConfigError(f"{name}: the range {text!r} is empty; give LO:HI with LO < HI")
    if log and lo <= 0:
        raise ConfigError(f"{name}: a log range needs LO > 0, got {text!r}")
    return Range(name, lo, hi, log, isinstance(lo, int))


def parse_axis(name: str, text: str) -> list[Any] | Range:
    """A list unless the text is a range (it holds ':')."""
    return parse_range(name, text) if ":" in str(text) else parse_list(name, text)


@dataclass
class Space:
    """The sweep's axes: lists (the grid) and ranges (sampled --samples times per grid point)."""

    axes: dict[str, list[Any] | Range]

    @property
    def lists(self) -> dict[str, list[Any]]:
        return {k: v for k, v in self.axes.items() if isinstance(v, list)}

    @property
    def ranges(self) -> dict[str, Range]:
        return {k: v for k, v in self.axes.items() if isinstance(v, Range)}

    @property
    def varying(self) -> list[str]:
        """The flags whose value differs between trials (they name the runs of a plain grid)."""
        return [k for k, v in self.axes.items() if isinstance(v, Range) or len(v) > 1]

    def grid(self) -> list[dict[str, Any]]:
        """The product of the lists, the first flag varying slowest:
        {lr: [a, b], bs: [1, 2]} -> (a,1) (a,2) (b,1) (b,2)."""
        lists = self.lists
        keys = list(lists)
        return [dict(zip(keys, combo)) for combo in itertools.product(*(lists[k] for k in keys))]

    def mutable(self) -> dict[str, list[Any] | Range]:
        """What PBT may perturb: the live settings the user swept (lists of more than one value, or ranges)."""
        return {k: v for k, v in self.axes.items() if k in MUTABLE and k in self.varying}


def parse_space(values: dict[str, str | None]) -> Space:
    """{flag: text or None} -> Space; raises ConfigError naming the first bad flag."""
    return Space({k: parse_axis(k, v) for k, v in values.items() if v is not None and k in SWEPT})


def in_rules(name: str, value: Any) -> bool:
    """True when `value` passes train's rule for `name` (a PBT perturbation must)."""
    if name in CHOICES:
        return value in CHOICES[name]
    try:
        parse_value(name, value)
    except ConfigError:
        return False
    return name in RULES
