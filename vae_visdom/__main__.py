"""`python -m vae_visdom`: the `vae-visdom` command (also what torchrun starts on every rank)."""
from vae_visdom.launch import exit_rank, quiet_rank

quiet_rank()  # before the CLI's imports: under torchrun a rank other than 0 never imports visdom

from vae_visdom.cli import main  # noqa: E402

if __name__ == "__main__":
    code = main()
    exit_rank(code)  # under torchrun: out of the group, then out at once (see launch.exit_rank)
    raise SystemExit(code)
