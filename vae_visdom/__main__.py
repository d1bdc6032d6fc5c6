"""`python -m vae_visdom`: the `vae-visdom` command."""
from vae_visdom.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
