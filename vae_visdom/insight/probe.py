"""The inspection probe: the PCA baseline (once), latent views and the IW log-likelihood (every N epochs).

Measured while the model trains. The session builds it; the trainer calls `run_start` and `epoch_end` (the Probe
protocol of train/events.py); what they return goes to the observers as figures and metrics.

None of this touches the global RNG, so a run's numbers do not depend on whether it is on.
"""
from __future__ import annotations

import time

import torch

from vae_visdom.insight.iwae import iw_log_likelihood
from vae_visdom.insight.latent import figures_for_epoch
from vae_visdom.insight.pca import pca_figures, pca_fit, pca_recon_error
from vae_visdom.train.events import Figure, Probe

PCA_MAX_TRAIN = 20000  # enough examples for a 784x784 covariance; keeps the run's start quick
PCA_MAX_TRAIN_LARGE = 1000  # images larger than 2048 pixels: PCA from a 1000x1000 Gram matrix


class InsightProbe(Probe):
    """The views and numbers of what the model learned, as one probe."""

    def __init__(self, model, data, device: torch.device, views: bool = True, iw_every: int = 0,
                 iw_samples: int = 100, binarize: bool = False, seed: int = 1):
        self.model, self.data, self.device = model, data, device
        self.views, self.iw_every, self.iw_samples = views, iw_every, iw_samples
        self.binarize, self.seed = binarize, seed
        self.pca_recon: float | None = None

    def run_start(self) -> dict[str, Figure]:
        """PCA with as many components as the latent has dimensions: the seed's linear autoencoder."""
        if not self.views:
            return {}
        pixels = self.data.train[0].numel()
        k = min(self.model.latent_dim, pixels)
        n = PCA_MAX_TRAIN if pixels <= 2048 else PCA_MAX_TRAIN_LARGE
        pca = pca_fit(self.data.train[:n].cpu(), k)
        if self.model.likelihood == "bernoulli":  # a cross-entropy compares with a Bernoulli decoder only
            self.pca_recon = float(pca_recon_error(pca, self.data.test.cpu()).bernoulli_nll.mean())
        return pca_figures(pca, self.data.test.cpu())

    def epoch_end(self, epoch: int) -> tuple[dict, dict[str, Figure]]:
        """(metrics for EpochRecord.extra, figures) for this epoch."""
        extra: dict = {}
        figures: dict[str, Figure] = {}
        if self.pca_recon is not None:
            extra["pca_test_recon"] = round(self.pca_recon, 4)
        if self.views:
            figures = figures_for_epoch(self.model, self.data.test, self.data.test_labels, self.device)
        if self.iw_every and epoch % self.iw_every == 0:
            t0 = time.perf_counter()
            res = iw_log_likelihood(self.model, self.data.test, self.iw_samples, binarize=self.binarize,
                                    generator=torch.Generator().manual_seed(self.seed), device=self.device)
            extra.update(test_iw_ll=res.log_likelihood, test_iw_se=res.stderr, test_iw_elbo=res.elbo,
                         iw_samples=self.iw_samples, iw_seconds=round(time.perf_counter() - t0, 3))
        return extra, figures
