"""The lab's second half end to end: conv64 on ORL faces and on a folder of RGB images, streaming to visdom."""
import json

import numpy as np
import pytest
from PIL import Image

from tests.builders import make_session
from vae_visdom.runs.files import read_jsonl


def windows_by_title(server, env: str) -> dict:
    vis = server.client(env, use_incoming_socket=False)
    return {d["title"]: d for d in json.loads(vis.get_window_data(env=env)).values()}


def train_streaming(server, tmp_path, env: str, **cfg):
    session = make_session(tmp_path / env, server=server, data=None, env=env, epochs=1, model="conv64", **cfg)
    status = session.run()
    assert status.state == "finished"
    return session


def test_conv64_on_orl_trains_one_epoch_and_streams(visdom_server, tmp_path):
    session = train_streaming(visdom_server, tmp_path, "orl-conv64", dataset="orl")
    assert session.data.image_shape == (1, 64, 64) and len(session.data.train) == 360
    (row,) = read_jsonl(tmp_path / "orl-conv64" / "metrics.jsonl")
    assert np.isfinite(row["test_loss"]) and row["epoch"] == 1
    wins = windows_by_title(visdom_server, "orl-conv64")
    assert 'src="data:image/png;base64,' in wins["samples from the prior"]["content"]
    loss = {t["name"]: t for t in wins["loss"]["content"]["data"]}
    assert loss["test"]["y"] == pytest.approx([row["test_loss"]])


def test_conv64_on_a_folder_of_rgb_images_trains_and_streams_colour(visdom_server, tmp_path):
    rng = np.random.default_rng(0)
    faces = tmp_path / "faces"
    for person in range(4):
        (faces / f"p{person}").mkdir(parents=True)
        for i in range(10):
            arr = rng.integers(0, 255, size=(60 + person, 50 + i, 3), dtype=np.uint8)
            Image.fromarray(arr, "RGB").save(faces / f"p{person}" / f"{i}.jpg")
    (faces / "p0" / "broken.jpg").write_bytes(b"not a jpeg")
    session = train_streaming(visdom_server, tmp_path, "folder-conv64", dataset="folder", data_dir=str(faces))
    assert session.data.image_shape == (3, 64, 64) and session.data.skipped == 1
    wins = windows_by_title(visdom_server, "folder-conv64")
    recon = wins["reconstructions (top: test images, bottom: reconstructions)"]["content"]
    assert 'src="data:image/png;base64,' in recon
    assert Image.open(tmp_path / "folder-conv64" / "sample_1.png").mode == "RGB"
