"""Convolutional VAEs: `conv` for 28x28 grey digits, `conv64` for 64x64 faces (grey or RGB).

The lab's second half: the MNIST experiment again, with convolutional layers for the
encoder and decoder, and the prior kept a spherical Gaussian N(0, I). Only q(z|x) and
p(x|z) change shape; the objective (objectives.py, Kingma & Welling 2014, eq. 10) does not.

Each stride-2 convolution (kernel 4, padding 1) halves the side exactly and its
transposed twin doubles it back, so the decoder mirrors the encoder layer for layer
(the DCGAN layout of Radford et al. 2016, section 3, without batch norm: a VAE is
evaluated one example at a time, and batch statistics would make a test loss depend
on the batch it sits in).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from vae_visdom.models.base import VAE
from vae_visdom.models.specs import model_fits


class ConvVAE(VAE):
    """x (B, C, H, W) -> strided convs -> hidden -> (mu, logvar) (B, latent) -> hidden -> transposed convs -> logits.

    `channels` gives the width of each stride-2 stage; H and W must be divisible by
    2 ** len(channels).
    """

    def __init__(self, image_shape: tuple[int, int, int], channels: tuple[int, ...] = (32, 64),
                 latent_dim: int = 20, hidden_dim: int = 256, likelihood: str = "bernoulli",
                 init_log_sigma: float = math.log(0.1)):
        super().__init__()
        if likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"unknown likelihood {likelihood!r}; allowed: bernoulli, gaussian")
        c, h, w = image_shape
        self.image_shape = (c, h, w)
        factor = 2 ** len(channels)
        if h % factor or w % factor:
            raise ValueError(f"{h}x{w} images do not fit {len(channels)} stride-2 stages: "
                             f"height and width must be divisible by {factor}")
        self.latent_dim = latent_dim
        self.likelihood = likelihood
        self.bottom = (channels[-1], h // factor, w // factor)  # (C', H', W') after the encoder convs
        n_bottom = math.prod(self.bottom)

        enc: list[nn.Module] = []
        for c_in, c_out in zip((c, *channels[:-1]), channels):
            enc += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.ReLU()]
        self.encoder = nn.Sequential(*enc, nn.Flatten(), nn.Linear(n_bottom, hidden_dim), nn.ReLU())
        self.fc_mu = nn.Linear(hidden_dim, latent_dim)
        self.fc_logvar = nn.Linear(hidden_dim, latent_dim)

        self.fc_dec = nn.Sequential(nn.Linear(latent_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, n_bottom),
                                    nn.ReLU())
        dec: list[nn.Module] = []
        rev = channels[::-1]
        for c_in, c_out in zip(rev, (*rev[1:], c)):
            dec += [nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1), nn.ReLU()]
        self.decoder = nn.Sequential(*dec[:-1])  # the last layer gives logits: no ReLU
        if likelihood == "gaussian":
            # One learned pixel noise scale (Rybkin et al. 2021, "Simple and Effective VAE Training
            # with Calibrated Decoders", section 3). Starting at sigma=1 makes the reconstruction
            # term so weak against the KL that q(z|x) collapses onto the prior before sigma has
            # shrunk (Adam moves it ~lr per step), so it starts at 0.1, about a pixel's error
            # after a few epochs.
            self.log_sigma = nn.Parameter(torch.tensor(float(init_log_sigma)))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)  # (B, hidden)
        return self.fc_mu(h), self.fc_logvar(h)  # (B, latent) each

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc_dec(z).view(-1, *self.bottom)  # (B, C', H', W')
        return self.decoder(h)  # logits (B, C, H, W)


def _check_size(model: str, image_shape: tuple[int, int, int]) -> None:
    problem = model_fits(model, image_shape)  # the one rule (specs.py), which the runs home checks too
    if problem:
        raise ValueError(problem)


def build_conv(image_shape: tuple[int, int, int], latent_dim: int, hidden_dim: int, likelihood: str) -> ConvVAE:
    """28x28 -> 14x14x32 -> 7x7x64 -> hidden -> latent, and back."""
    _check_size("conv", image_shape)
    return ConvVAE(image_shape, channels=(32, 64), latent_dim=latent_dim, hidden_dim=hidden_dim,
                   likelihood=likelihood)


def build_conv64(image_shape: tuple[int, int, int], latent_dim: int, hidden_dim: int, likelihood: str
                 ) -> ConvVAE:
    """64x64 -> 32x32x32 -> 16x16x32 -> 8x8x64 -> 4x4x64 -> hidden -> latent, and back."""
    _check_size("conv64", image_shape)
    return ConvVAE(image_shape, channels=(32, 32, 64, 64), latent_dim=latent_dim, hidden_dim=hidden_dim,
                   likelihood=likelihood)
