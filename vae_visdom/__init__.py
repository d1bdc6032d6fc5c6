"""vae_visdom: train Variational Autoencoders and watch (and steer) them live in visdom."""

__version__ = "0.1.0"
