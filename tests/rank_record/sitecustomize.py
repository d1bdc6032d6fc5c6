"""Loaded at start-up by every process of a test that puts this folder on PYTHONPATH (tests/test_distributed.py's
torchrun ranks): with VAE_VISDOM_COMMAND_RECORD naming a folder, each rank's trainer gets one more observer,
which appends every command the rank applies to FOLDER/rank<R>.jsonl. The test reads those files to prove
that every rank applied the same commands at the same step. Test code only: nothing of the package knows it."""
import importlib.abc
import importlib.util
import json
import os
import sys
import time

FOLDER = os.environ.get("VAE_VISDOM_COMMAND_RECORD")
WATCHED = "vae_visdom.train.trainer"


class CommandRecord:
    def __init__(self, folder: str, rank: int):
        os.makedirs(folder, exist_ok=True)
        self.path, self.rank = os.path.join(folder, f"rank{rank}.jsonl"), rank

    def __getattr__(self, hook):  # every other hook of the trainer's observers: nothing to do
        return lambda *args, **kwargs: None

    def on_command(self, event) -> None:
        row = dict(rank=self.rank, epoch=event.epoch, step=event.step, name=event.name, value=event.value,
                   accepted=event.accepted, time=time.time(), cpu=time.process_time(),
                   visdom_imported=sys.modules.get("visdom") is not None)
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")


def _add_record(module) -> None:
    built = module.Trainer.__init__

    def __init__(self, *args, **kwargs):
        built(self, *args, **kwargs)
        self.add_callback(CommandRecord(FOLDER, int(os.environ.get("RANK", "0"))))

    module.Trainer.__init__ = __init__


class _WhenTrainerLoads(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != WATCHED:
            return None
        sys.meta_path.remove(self)  # find the real module, once
        spec = importlib.util.find_spec(name)
        loader = spec.loader
        run = loader.exec_module

        def exec_module(module):
            run(module)
            _add_record(module)

        loader.exec_module = exec_module
        return spec


if FOLDER:
    sys.meta_path.insert(0, _WhenTrainerLoads())
