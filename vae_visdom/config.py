"""One validated config, and the one set of rules for each hyperparameter.

The CLI (argparse `type=`), the control panel and the controller all call
`parse_value(name, raw, ...)`, so a value the command line refuses is refused
by the panel with the same words, and the other way round.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vae_visdom.models.specs import MODEL_NAMES, MODEL_SPECS


class ConfigError(ValueError):
    """A value outside the rules. str(err) is one line for the user."""


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


DATASETS = ("mnist", "fashion-mnist", "orl", "folder", "celeba")
OPTIMIZERS = ("adam", "adagrad", "sgd")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16")
FAST_STEPS = ("auto", "eager", "graph", "compile")
LIKELIHOODS = ("bernoulli", "gaussian")
OBJECTIVES = ("elbo", "iwae")  # train/objectives.py computes each (tests/test_iwae_objective.py checks)
# What the datasets that need no data folder hold: (image shape, training images at the default test_fraction);
# for checks made before any data is loaded (the runs home's form). tests/test_flag_rules.py holds it to the loaders.
FIXED_DATASETS = {"mnist": ((1, 28, 28), 60000), "fashion-mnist": ((1, 28, 28), 60000), "orl": ((1, 64, 64), 360)}
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8097  # where `serve` listens and a run streams to, unless told
DEFAULT_SERVER = f"http://{DEFAULT_HOST}"


# Run and env names become folder names, visdom env ids, env file names and parts of URLs and of the
# page's scripts: letters, digits, '.', '_' and '-', starting with a letter or digit (so never '.' or
# '..', no path separator, nothing a page template or a URL would have to escape), at most 100 long.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
NAME_ALLOWED = ("1 to 100 of the characters A-Z a-z 0-9 . _ -, starting with a letter or digit "
                "(no spaces, slashes, quotes or other punctuation)")


def check_name(raw: Any, what: str = "name") -> str:
    """A run or env name that is safe as a file name, an env id and a URL part; ConfigError otherwise."""
    if not isinstance(raw, str) or not NAME_PATTERN.fullmatch(raw):
        shown = raw if not isinstance(raw, str) or len(raw) <= 60 else raw[:57] + "..."
        raise ConfigError(f"{what}: {shown!r} is not allowed; allowed: {NAME_ALLOWED}")
    return raw


# Plain ASCII decimals only: float() and int() also take other scripts' digits, full-width digits,
# underscores and hex floats, which a typo or a hostile page can slip through.
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INTEGER = re.compile(r"[+-]?[0-9]+")
MAX_SHOWN = 24  # characters of a rejected value echoed in a message (the full value stays in events.jsonl)


def shown(raw: Any) -> str:
    """repr(raw), shortened for a one-line message: a 100 kB paste must not become a 100 kB verdict."""
    text = raw if isinstance(raw, str) else repr(raw)
    if len(text) <= MAX_SHOWN:
        return repr(raw)
    return f"{text[:MAX_SHOWN]!r}... ({len(text)} characters)"


def fit_name(text: str, limit: int = 100) -> str:
    """A derived name (e.g. compare-<sweep>) cut to `limit` characters, ending in a hash when cut."""
    if len(text) <= limit:
        return text
    return text[:limit - 9] + "-" + hashlib.sha1(text.encode()).hexdigest()[:8]


def env_login() -> tuple[str, str] | None:
    """The login every process of ours uses with a visdom server: (VISDOM_USERNAME, VISDOM_PASSWORD) when both
    are set and not empty, else None. The one reader of that rule: `serve --login` takes it as the server's
    login, and the trainer's monitor, the runs home, replay, compare and the family view log in with it."""
    user, password = os.environ.get("VISDOM_USERNAME"), os.environ.get("VISDOM_PASSWORD")
    return (user, password) if user and password else None


def _finite_number(raw: Any, name: str) -> float:
    if raw is None or isinstance(raw, bool):
        raise ConfigError(f"{name}: expected a number, got {shown(raw)}")
    if isinstance(raw, (int, float)):
        try:
            value = float(raw)
        except OverflowError:  # a JSON integer of hundreds of digits
            raise ConfigError(f"{name}: {shown(raw)} is not a finite number") from None
    elif isinstance(raw, str):
        text = raw.strip()
        if not text:
            raise ConfigError(f"{name}: empty value")
        if not _DECIMAL.fullmatch(text):
            raise ConfigError(f"{name}: {shown(raw)} is not a number (ASCII digits, '.', 'e' only)")
        value = float(text)
    else:
        raise ConfigError(f"{name}: expected a number, got {shown(raw)}")
    if not math.isfinite(value):
        raise ConfigError(f"{name}: {shown(raw)} is not a finite number")
    return value


def _integer(raw: Any, name: str) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and _INTEGER.fullmatch(raw.strip()):
        if len(raw.strip()) > 30:  # int() refuses more than 4300 digits; no rule allows 30
            raise ConfigError(f"{name}: {shown(raw)} is too large")
        return int(raw.strip())
    _finite_number(raw, name)  # names what is wrong when it is no number at all
    raise ConfigError(f"{name}: {shown(raw)} is not a whole number")


@dataclass(frozen=True)
class Rule:
    """How one hyperparameter is parsed, which values are allowed, and when a live change applies."""

    parse: Callable[[Any, str], Any]
    check: Callable[[Any, dict], str | None]  # returns an error message or None
    allowed: str  # shown to the user next to a rejection
    live: bool = False  # may change while the run goes on (control panel)
    applies: str = ""  # when a live change takes effect, in the user's words
    choices: tuple[str, ...] = ()  # the allowed words of a choice field (the CLI's `choices=`)


def _range(lo: float, hi: float, lo_open: bool = False) -> Callable[[Any, dict], str | None]:
    def check(v: Any, ctx: dict) -> str | None:
        return "out of range" if (v <= lo if lo_open else v < lo) or v > hi else None

    return check


def _choice(choices: tuple[str, ...]) -> Rule:
    def parse(raw: Any, name: str) -> str:
        if not isinstance(raw, str) or raw not in choices:
            raise ConfigError(f"{name}: unknown value {shown(raw)}")
        return raw

    return Rule(parse, lambda v, ctx: None, ", ".join(choices), choices=choices)


def _batch_check(v: int, ctx: dict) -> str | None:
    n_train = ctx.get("n_train")
    if v >= 1 and n_train is not None and v > n_train:
        return f"larger than the training set ({n_train} examples)"
    return "out of range" if v < 1 or v > 65536 else None


def _server_address(raw: Any, name: str) -> str:
    """http(s)://HOST: what visdom's client puts before ":PORT" (so no port, path, query or login here)."""
    from urllib.parse import urlsplit

    text = raw.strip() if isinstance(raw, str) else ""
    try:
        parts = urlsplit(text) if text else None
        ok = parts is not None and parts.scheme in ("http", "https") and bool(parts.hostname) and \
            parts.port is None and not parts.username and parts.path in ("", "/") and not parts.query and \
            not parts.fragment and not any(c.isspace() for c in text)
    except ValueError:  # urlsplit refuses a malformed [ipv6] or port
        ok = False
    if not ok:
        raise ConfigError(f"{name}: {shown(raw)} is not a server address")
    return text.rstrip("/")


def _schedule_check(v, ctx):
    if re.fullmatch(r"constant|burda(:([89]|[1-9][0-9]{1,5}))?", v):
        return None
    cosine = re.fullmatch(r"cosine:([2-9]|[1-9][0-9]{1,5})(:([0-9.]+(e-?[0-9]+)?))?", v)
    if cosine and cosine.group(3) is not None:
        try:
            floor = float(cosine.group(3))
        except ValueError:
            return "unknown"
        return None if 0.0 < floor <= 1.0 else "unknown"
    return None if cosine else "unknown"


RULES: dict[str, Rule] = {
    "lr": Rule(_finite_number, _range(0.0, 10.0, lo_open=True), "a number in (0, 10], e.g. 1e-3",
               live=True, applies="from the next optimizer step, to every parameter group"),
    "batch_size": Rule(_integer, _batch_check, "a whole number from 1 to the training set size",
                       live=True, applies="from the next step: the rest of the epoch's permutation is re-sliced"),
    "epochs": Rule(_integer, _range(1, 100000), "a whole number from 1 to 100000",
                   live=True, applies="the new total; below the current epoch, the run finishes after it"),
    "log_interval": Rule(_integer, _range(1, 100000), "a whole number of steps from 1 to 100000",
                         live=True, applies="from the next step"),
    "beta": Rule(_finite_number, _range(0.0, 1000.0), "a number from 0 to 1000 (1: the ELBO)", live=True,
                 applies="from the next step; during --kl-warmup, the value the ramp rises to"),
    "latent_dim": Rule(_integer, _range(1, 4096), "a whole number from 1 to 4096"),
    "hidden_dim": Rule(_integer, _range(1, 65536), "a whole number from 1 to 65536"),
    "seed": Rule(_integer, _range(0, 2**63 - 1), "a whole number >= 0"),
    "test_fraction": Rule(_finite_number, _range(0.0, 0.9, lo_open=True), "a fraction in (0, 0.9]"),
    "subset": Rule(_integer, _range(1, 10**8), "a whole number of images >= 1"),
    "iw_every": Rule(_integer, _range(0, 100000), "a whole number of epochs >= 0 (0: never)"),
    "iw_samples": Rule(_integer, _range(1, 100000), "a whole number of samples >= 1"),
    "dataset": _choice(DATASETS),
    "model": _choice(MODEL_NAMES),
    "optimizer": _choice(OPTIMIZERS),
    "device": _choice(DEVICES),
    "precision": _choice(PRECISIONS),
    "fast_step": _choice(FAST_STEPS),
    "likelihood": _choice(LIKELIHOODS),
    "objective": _choice(OBJECTIVES),
    "iwae_k": Rule(_integer, _range(1, 5000), "a whole number of samples from 1 to 5000"),
    "kl_warmup": Rule(_integer, _range(0, 10**9), "a whole number of steps >= 0 (0: no warm-up)"),
    "checkpoint_budget": Rule(_integer, _range(0, 10**6), "a whole number of MB from 0 to 1000000 (0: keep none)"),
    "port": Rule(_integer, _range(1, 65535), "a whole number from 1 to 65535"),
    "server": Rule(_server_address, lambda v, ctx: None, "http://HOST or https://HOST (the port goes in --port)"),
    "lr_schedule": Rule(lambda raw, name: raw.strip() if isinstance(raw, str) else shown(raw), _schedule_check,
                        "constant, burda (Burda et al.'s 8 lr stages, 3280 epochs), burda:E (them in E >= 8 epochs) "
                        "or cosine:E[:F] (half a cosine from the lr to F times it, default 0.01, in E >= 2 epochs)"),
}


# Flags that are not a run's config, checked the same way (argparse_type takes either table's names).
FLAG_RULES: dict[str, Rule] = {
    "nproc_per_node": Rule(_integer, _range(1, 4096), "a whole number of processes >= 1"),
    "max_page_runs": Rule(_integer, _range(0, 1000), "a whole number >= 0 (0: the page starts no runs)"),
}


def parse_value(name: str, raw: Any, ctx: dict | None = None) -> Any:
    """Parse and check one hyperparameter (or flag); raise ConfigError with a one-line message."""
    rule = RULES[name] if name in RULES else FLAG_RULES[name]
    try:
        value = rule.parse(raw, name)
    except ConfigError as err:
        raise ConfigError(f"{err}; allowed: {rule.allowed}") from None
    problem = rule.check(value, ctx or {})
    if problem:
        raise ConfigError(f"{name}: {shown(raw)} {problem}; allowed: {rule.allowed}")
    return value


def add_server_arguments(p: argparse.ArgumentParser) -> None:
    """--server and --port of a command that talks to a visdom server (replay, compare, home), by the rule table."""
    p.add_argument("--server", type=argparse_type("server"), default=DEFAULT_SERVER,
                   help="visdom server (default: %(default)s)")
    p.add_argument("--port", type=argparse_type("port"), default=DEFAULT_PORT,
                   help="visdom port (default: %(default)s)")


def argparse_type(name: str) -> Callable[[str], Any]:
    """An argparse `type=` that applies RULES[name] (argparse turns ConfigError into exit 2)."""
    def convert(raw: str) -> Any:
        try:
            return parse_value(name, raw)
        except ConfigError as err:
            raise argparse.ArgumentTypeError(str(err).split(": ", 1)[1]) from None
    convert.__name__ = name  # argparse names the type in its message
    return convert


@dataclass
class TrainConfig:
    """Everything a run needs. Defaults are the seed's (pytorch/examples vae/main.py)."""

    dataset: str = "mnist"
    model: str = "mlp"
    epochs: int = 10
    batch_size: int | None = None  # None: the model's default
    lr: float | None = None  # None: the model's default
    optimizer: str | None = None  # None: the model's default
    # constant | burda | burda:E | cosine:E[:F] (train/schedule.py); the lr given is its first level
    lr_schedule: str = "constant"
    latent_dim: int | None = None
    hidden_dim: int | None = None
    likelihood: str | None = None
    seed: int = 1
    device: str = "auto"
    data_dir: str | None = None
    out: str | None = None  # the run directory
    runs_dir: str = "runs"
    log_interval: int = 10
    test_fraction: float = 0.1
    subset: int | None = None
    binarize: bool = False
    iw_every: int = 0
    views: bool = True  # latent views and the PCA baseline (cheap: a few ms an epoch)
    iw_samples: int = 100
    visdom: bool = True
    server: str = DEFAULT_SERVER
    port: int = DEFAULT_PORT
    env: str | None = None
    name: str | None = None
    fast_step: str = "auto"  # auto | eager | graph | compile: a captured CUDA graph (GPU), the hand-derived MLP step
    # or the convolutional VAEs' channels_last step (CPU); compile: that step through torch.compile
    precision: str = "fp32"  # fp32 | bf16: bf16 autocast for the forward pass (the ELBO stays fp32)
    keep_checkpoints: bool = False  # keep RUN_DIR/checkpoints/epoch_E.pt of every epoch, whatever the budget
    checkpoint_budget: int = 100  # MB of epoch checkpoints kept for forks from an epoch, newest first (0: none)
    parent: str | None = None  # a fork's parent run folder (runs/fork.py)
    forked_at: dict | None = None  # {"epoch", "step"} of the parent's checkpoint the fork started from
    # the live values (lr, batch_size, epochs, log_interval, beta) the run started with, kept across resumes:
    # where `train --steer-like` starts from (the values above are the ones it continues with)
    started_with: dict | None = None
    beta: float = 1.0  # the KL term's weight (1: the ELBO); kl_warmup: steps over which it rises from 0
    kl_warmup: int = 0
    objective: str = "elbo"  # elbo | iwae: the importance-weighted bound with iwae_k samples (train/objectives.py)
    iwae_k: int = 5  # samples per example of --objective iwae (Burda et al. 2016 train with 5 and 50)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def validate(self) -> TrainConfig:
        """Check every field by its rule in RULES; raise ConfigError naming the first bad one."""
        for name in RULES:
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, parse_value(name, value))
        for name in ("name", "env"):
            if getattr(self, name) is not None:
                check_name(getattr(self, name), name)
        if self.name is None and self.out is not None:  # the run is named after its folder
            try:
                check_name(Path(self.out).name, "name")
            except ConfigError as err:
                raise ConfigError(f"{err}; the name comes from --out's last folder: give --name") from None
        if self.dataset in ("folder", "celeba") and not self.data_dir:
            raise ConfigError(f"data_dir: --dataset {self.dataset} needs --data-dir DIR")
        return self

    def with_defaults(self, defaults: dict) -> TrainConfig:
        """Fill the fields left None from `defaults` (the model's for this dataset: models.with_model_defaults)."""
        for key, value in defaults.items():
            if getattr(self, key, None) is None:
                setattr(self, key, value)
        return self


def with_model_defaults(cfg: TrainConfig) -> TrainConfig:
    """Fill the config's fields left None from the model's defaults for its dataset (models/specs.py)."""
    return cfg.with_defaults(MODEL_SPECS[cfg.model].defaults_for(cfg.dataset))


def default_run_name(cfg: TrainConfig) -> str:
    """dataset-model-lr-bs-time: the name of a run the user did not name."""
    return f"{cfg.dataset}-{cfg.model}-lr{cfg.lr:g}-bs{cfg.batch_size}-{time.strftime('%Y%m%d-%H%M%S')}"


def writable_dir(path: Path) -> Path:
    """`path`, created and proven writable; UsageError otherwise."""
    probe = path / ".write-test"
    try:
        path.mkdir(parents=True, exist_ok=True)
        try:
            probe.write_text("ok")
        finally:
            probe.unlink(missing_ok=True)  # a full disk can fail the write after creating the file
    except OSError as err:
        raise UsageError(
            f"output dir {path} is not writable ({err.strerror or err}); choose another with --out") from err
    return path
