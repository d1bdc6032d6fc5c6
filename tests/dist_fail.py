"""`vae-visdom train ARGS` on every rank torchrun starts, but rank 1 raises at its 5th step (test_distributed.py)."""
import os
import sys

from vae_visdom.train.trainer import Trainer

if os.environ.get("RANK") == "1":
    batch = Trainer._batch

    def failing(self, idx):
        if self.step == 4:
            raise RuntimeError("rank 1 cannot go on: the disk is on fire")
        return batch(self, idx)

    Trainer._batch = failing

from vae_visdom.cli import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
