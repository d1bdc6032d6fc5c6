"""`vae-visdom animate`: one frame per epoch, in epoch order, each with its epoch number."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

from tests.builders import make_session
from tests.conftest import synthetic_data
from vae_visdom.cli import main
from vae_visdom.runs.animate import STRIP, animate
from vae_visdom.runs.images import save_image

EPOCHS = (1, 2, 3, 9, 10, 11)  # 10 and 11 sort before 2 as text


def frames(path) -> list[np.ndarray]:
    with Image.open(path) as gif:
        return [np.asarray(f.convert("L")) for f in ImageSequence.Iterator(gif)]


def test_one_frame_per_epoch_in_order_with_its_number(tmp_path, capsys):
    for e in EPOCHS:  # each epoch's grid one grey level: the frame order can be read back
        save_image(torch.full((64, 1, 28, 28), e / 12), tmp_path / f"sample_{e}.png")
    assert main(["animate", str(tmp_path)]) == 0
    assert "6 frames, one per epoch" in capsys.readouterr().out
    got = frames(tmp_path / "samples.gif")
    assert len(got) == len(EPOCHS)
    levels = [round(float(np.median(f[STRIP:])) / 255 * 12) for f in got]
    assert levels == list(EPOCHS)
    strips = [f[:STRIP] for f in got]
    assert all(s.max() > 128 for s in strips)  # the number is written on every frame
    assert len({s.tobytes() for s in strips}) == len(EPOCHS)  # and it is each frame's own


def test_no_samples_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["animate", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "no sample_N.png" in err and "\n" not in err
    with pytest.raises(ValueError):
        animate(tmp_path)


def test_a_run_ends_with_its_animation(tmp_path):
    make_session(tmp_path / "r", data=synthetic_data(256, 64), epochs=3, device="cpu", batch_size=64, hidden_dim=32,
                 latent_dim=4, views=False).run()
    got = frames(tmp_path / "r" / "samples.gif")
    assert len(got) == 3
    for e, f in enumerate(got, 1):  # each frame is that epoch's sample grid
        want = np.asarray(Image.open(tmp_path / "r" / f"sample_{e}.png").convert("L")).astype(int)
        assert np.abs(f[STRIP:].astype(int) - want).max() <= 9  # 16 grey levels, 17 apart


def test_at_most_n_frames_evenly_spaced_first_and_last_kept(tmp_path):
    from vae_visdom.runs.animate import gif_bytes

    for e in range(1, 13):
        save_image(torch.full((4, 1, 28, 28), e / 12), tmp_path / f"sample_{e}.png", nrow=2)
    (tmp_path / "few.gif").write_bytes(gif_bytes(tmp_path, max_frames=4))
    levels = [round(float(np.median(f[STRIP:])) / 255 * 12) for f in frames(tmp_path / "few.gif")]
    assert levels == [1, 5, 8, 12]
