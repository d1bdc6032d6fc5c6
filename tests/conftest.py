"""Shared fixtures. Server and browser fixtures live in tests/fixtures.py."""
from __future__ import annotations

import os

import pytest
import torch

pytest_plugins = ["tests.fixtures"] if os.path.exists(os.path.join(os.path.dirname(__file__), "fixtures.py")) else []


def synthetic_data(n_train: int = 512, n_test: int = 128, shape=(1, 28, 28), seed: int = 0):
    """Small random uint8 images: for behaviour that does not depend on real data."""
    from vae_visdom.data import ImageData

    g = torch.Generator().manual_seed(seed)
    train = (torch.rand(n_train, *shape, generator=g) * 255).to(torch.uint8)
    test = (torch.rand(n_test, *shape, generator=g) * 255).to(torch.uint8)
    return ImageData("synthetic", train, test, source="random test images")


@pytest.fixture
def tiny_data():
    return synthetic_data()


@pytest.fixture(scope="session")
def mnist():
    """Real MNIST through the app's offline chain (prepared by scripts/setup.sh)."""
    from vae_visdom.data import load_dataset

    return load_dataset("mnist")
