"""The models `--model` offers: names, one-line help, training defaults, per-dataset defaults. Torch-free.

The one table of models: config's rule for `model`, the train flags' help, the runs home's form and sweep
read it without importing torch; models/__init__.py builds each by the same name.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ModelSpec:
    """What a user sees of one model, and the training defaults that suit it."""

    help: str
    defaults: dict  # optimizer, lr, batch_size, latent_dim, hidden_dim, likelihood
    per_dataset: dict = field(default_factory=dict)  # dataset -> overrides of defaults
    image_size: int | None = None  # the square side the model takes; None: any (it flattens)

    def defaults_for(self, dataset: str) -> dict:
        return {**self.defaults, **self.per_dataset.get(dataset, {})}


MODEL_SPECS: dict[str, ModelSpec] = {  # in the order `--help` lists them; "mlp" is the default
    "mlp": ModelSpec(
        "the PyTorch example's VAE: 784-400-20, ReLU, Adam 1e-3",
        dict(optimizer="adam", lr=1e-3, batch_size=128, latent_dim=20, hidden_dim=400, likelihood="bernoulli"),
    ),
    "mlp-paper": ModelSpec(
        "Kingma & Welling's MNIST setup: sigmoid hidden units, 500 hidden, Adagrad",
        # Kingma & Welling (2014), section 5: 500 hidden units for MNIST, minibatch M=100,
        # Adagrad with a global stepsize from {0.01, 0.02, 0.1}.
        dict(optimizer="adagrad", lr=0.02, batch_size=100, latent_dim=20, hidden_dim=500, likelihood="bernoulli"),
    ),
    "mlp-iwae": ModelSpec(
        "Burda et al.'s IWAE-paper VAE: 784-200-200-50, tanh, Bernoulli (train with --binarize)",
        # Burda et al. (2016), section 5 and appendix: batch 20, Adam (beta1 0.9, beta2 0.999, eps 1e-4),
        # lr 1e-3 decayed in stages (`--lr-schedule burda`, train/schedule.py).
        dict(optimizer="adam", lr=1e-3, batch_size=20, latent_dim=50, hidden_dim=200, likelihood="bernoulli"),
    ),
    "conv": ModelSpec(
        "conv encoder/decoder for 28x28 grey images (MNIST, Fashion-MNIST): 2 stride-2 stages",
        dict(optimizer="adam", lr=1e-3, batch_size=128, latent_dim=20, hidden_dim=256, likelihood="bernoulli"),
        image_size=28,
    ),
    "conv64": ModelSpec(
        "conv encoder/decoder for 64x64 grey or RGB images (ORL, image folders, CelebA): 4 stride-2 stages",
        # ORL has 360 training faces: batch 16 gives 23 steps an epoch, which learned faster per epoch
        # than 32 in our runs (docs/faces.md). A Gaussian p(x|z) with a learned sigma reached a lower
        # test pixel error than a Bernoulli one on grey faces in the same number of steps.
        dict(optimizer="adam", lr=1e-3, batch_size=16, latent_dim=32, hidden_dim=256, likelihood="gaussian"),
        # CelebA subsets run to thousands of images: bigger batches, a roomier latent space.
        per_dataset={"celeba": dict(batch_size=64, latent_dim=64)},
        image_size=64,
    ),
}
MODEL_NAMES = tuple(MODEL_SPECS)


def model_fits(model: str, image_shape: tuple[int, int, int]) -> str | None:
    """Why `model` cannot take images of `image_shape` (C, H, W), or None: the rule models/conv.py builds by
    and the runs home's form checks before it starts a run."""
    side = MODEL_SPECS[model].image_size
    if side is None:
        return None
    c, h, w = image_shape
    if (h, w) != (side, side):
        other = "conv64" if (h, w) == (64, 64) else "conv" if (h, w) == (28, 28) else "mlp"
        return (f"model {model} is built for {side}x{side} images, the data is {h}x{w} "
                f"({c} channel{'s' * (c != 1)}): use --model {other}")
    if c not in (1, 3):
        return f"model {model} expects 1 (grey) or 3 (RGB) channels, the data has {c}"
    return None
