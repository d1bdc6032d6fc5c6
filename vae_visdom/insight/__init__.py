"""Work that reads the model during training but is not training: the PCA baseline, latent views, the IW
estimate (probes), and `vae-visdom eval`."""
