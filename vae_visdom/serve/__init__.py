"""`vae-visdom serve`: visdom's server, guarded (Host/Origin rule, env ids), with pinned UI assets and locked env
files."""
