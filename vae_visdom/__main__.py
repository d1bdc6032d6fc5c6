"""`python -m vae_visdom`: the `vae-visdom` command (also what torchrun starts on every rank)."""
from vae_visdom.launch import quiet_rank

quiet_rank()  # before the CLI's imports: under torchrun a rank other than 0 never imports visdom

from vae_visdom.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
