"""Live monitoring in visdom: the run's windows, the control panel, and replay from the log.

    VisdomMonitor(server, port, env, run_dir, controller)  an events.Callback
    replay(run_dir, server, port, env)                      draw a run again from RUN_DIR/visdom.log
    add_cli(subparsers)                                     registers `vae-visdom replay`

Importing this package imports visdom (the CLI skips it where visdom is missing).
"""
from vae_visdom.monitor.replay import add_cli, replay
from vae_visdom.monitor.visdom_monitor import TITLES, VisdomMonitor

__all__ = ["VisdomMonitor", "replay", "add_cli", "TITLES"]
