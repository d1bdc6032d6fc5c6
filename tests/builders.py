"""The one way a test builds a training session: the defaults that tests share live here, so that a test
states only what it cares about (its epochs, batch size, model, data).

    make_session(tmp_path / "run", epochs=2, batch_size=64)        # visdom off, no progress bar, synthetic images
    make_session(tmp_path / env, server=server, env=env, epochs=1)  # streams to a test server (its port)
    make_session(run_dir, resume=True, overrides={"lr": 3e-4})      # resumes the run saved in run_dir
    make_session(tmp_path / "orl", data=None, dataset="orl")        # the config's own data set, loaded by the session
    make_session(cfg=make_config(run_dir, epochs=2), resume=True)   # a resume on a config of the test's own

Fields not given keep TrainConfig's defaults (device "auto", seed 1, 10 epochs, ...): a test that needs the
CPU says device="cpu".
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tests.conftest import synthetic_data
from vae_visdom.config import TrainConfig
from vae_visdom.data import ImageData
from vae_visdom.session import TrainingSession
from vae_visdom.train.events import Callback

SYNTHETIC = object()  # make_session()'s default data: a fresh synthetic_data() (512 train, 128 test random images)


def make_config(out: str | Path | None = None, *, server=None, **fields) -> TrainConfig:
    """A TrainConfig writing to `out` (None: runs_dir/name, as the trainer does). With `server` (a test
    server, tests/fixtures.py) it streams to that server's port; without one, visdom is off."""
    if out is not None:
        fields["out"] = str(out)
    if server is not None:
        fields.setdefault("port", server.port)
    else:
        fields.setdefault("visdom", False)
    return TrainConfig(**fields)


def saved_config(out: str | Path) -> TrainConfig:
    """The config a run saved in its folder, pointed at that folder (what a resume starts from)."""
    cfg = TrainConfig.load(Path(out) / "config.json")
    cfg.out = str(out)
    return cfg


def make_session(out: str | Path | None = None, *, cfg: TrainConfig | None = None, data=SYNTHETIC, server=None,
                 resume: bool = False, overrides: dict | None = None, callbacks: Iterable[Callback] = (),
                 monitor: Callback | None = None, progress: bool = False, **fields) -> TrainingSession:
    """A TrainingSession on make_config(out, server=server, **fields); with resume=True, on the config saved in
    `out` (changes to it go in `overrides`, as the command line's do); or on `cfg` when one is given.
    `data`: the images to train on (default synthetic_data()); None: the config's data set, loaded by the
    session."""
    if cfg is not None:
        assert not fields and out is None and server is None, "cfg= is the whole config"
    elif resume:
        assert not fields and server is None, "a resume reads its config from the run folder: use overrides="
        assert out is not None, "a resume needs the run folder"
        cfg = saved_config(out)
    else:
        cfg = make_config(out, server=server, **fields)
    images: ImageData | None = synthetic_data() if data is SYNTHETIC else data
    return TrainingSession(cfg, resume=resume, overrides=overrides, data=images, callbacks=list(callbacks),
                           progress=progress, monitor=monitor)
