"""The fully connected VAEs: the PyTorch example's (`mlp`), the paper's sigmoid variant (`mlp-paper`) and
Burda et al.'s deeper one (`mlp-iwae`), one class with any number of hidden layers each side."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from vae_visdom.models.base import VAE

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
# MLPVAE's parameters before the deeper model joined it (one hidden layer, fc1..fc4): the names old
# checkpoints carry, and where each lives now
_OLD_NAMES = {"fc1": "encoder.0", "fc21": "fc_mu", "fc22": "fc_logvar", "fc3": "decoder.0.0", "fc4": "decoder.1"}


class MLPVAE(VAE):
    """x (B, C, H, W) -> pixels -> hidden layers -> (mu, logvar) (B, latent) -> the hidden layers mirrored ->
    logits (B, C, H, W).

    `hidden_dims` are the encoder's widths; the decoder mirrors them. One layer of 400 ReLU units is
    pytorch/examples vae/main.py's VAE; one of 500 sigmoid units, Kingma & Welling's (2014, section 5); two of
    200 tanh units with 50 latent units, Burda, Grosse & Salakhutdinov's (2016, "Importance Weighted
    Autoencoders", section 5). The parameters are created in that order (encoder, mu, logvar, decoder,
    output), the order a seed's initial weights depend on.
    """

    def __init__(self, image_shape=(1, 28, 28), latent_dim: int = 20, hidden_dims: Sequence[int] = (400,),
                 activation: str = "relu", likelihood: str = "bernoulli"):
        super().__init__()
        if likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"unknown likelihood {likelihood!r}; allowed: bernoulli, gaussian")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; allowed: {', '.join(ACTIVATIONS)}")
        if not hidden_dims:
            raise ValueError("an MLPVAE needs at least one hidden layer")
        self.image_shape = tuple(image_shape)
        self.latent_dim = latent_dim
        self.likelihood = likelihood
        self.activation = activation
        self.hidden_dims = tuple(hidden_dims)
        n_pixels = math.prod(self.image_shape)
        self.encoder = _stack((n_pixels, *self.hidden_dims), activation)
        self.fc_mu = nn.Linear(self.hidden_dims[-1], latent_dim)
        self.fc_logvar = nn.Linear(self.hidden_dims[-1], latent_dim)
        self.decoder = nn.Sequential(_stack((latent_dim, *self.hidden_dims[::-1]), activation),
                                     nn.Linear(self.hidden_dims[0], n_pixels))
        if likelihood == "gaussian":
            self.log_sigma = nn.Parameter(torch.zeros(()))
        self.register_load_state_dict_pre_hook(_rename_old_names)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x.flatten(1))  # (B, hidden[-1])
        return self.fc_mu(h), self.fc_logvar(h)  # (B, latent) each

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z).view(-1, *self.image_shape)  # logits (B, C, H, W)


def _stack(widths: tuple[int, ...], activation: str) -> nn.Sequential:
    """Linear + the activation for each consecutive pair of widths."""
    layers: list[nn.Module] = []
    for n_in, n_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(n_in, n_out), ACTIVATIONS[activation]()]
    return nn.Sequential(*layers)


def _rename_old_names(module: nn.Module, state_dict: dict, prefix: str, *_) -> None:
    """A checkpoint saved before the merge (fc1.weight, ..., fc4.bias) loads under today's names."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        layer, dot, rest = key[len(prefix):].partition(".")
        if dot and layer in _OLD_NAMES:
            state_dict[f"{prefix}{_OLD_NAMES[layer]}.{rest}"] = state_dict.pop(key)


def build_mlp(image_shape, latent_dim, hidden_dim, likelihood):
    return MLPVAE(image_shape, latent_dim, (hidden_dim,), "relu", likelihood)


def build_mlp_paper(image_shape, latent_dim, hidden_dim, likelihood):
    return MLPVAE(image_shape, latent_dim, (hidden_dim,), "sigmoid", likelihood)


def build_mlp_iwae(image_shape, latent_dim, hidden_dim, likelihood):
    return MLPVAE(image_shape, latent_dim, (hidden_dim, hidden_dim), "tanh", likelihood)
