"""`python -m vae_visdom.serve [serve options]`: the same as `vae-visdom serve`."""
import sys

from vae_visdom.serve.server import main

sys.exit(main())
