"""Live monitoring in visdom: the run's windows, the control panel, and replay from the log.

    VisdomMonitor(server, port, env, run_dir, controller)  an events.Callback
    replay(run_dir, server, port, env)                      draw a run again from RUN_DIR/visdom.log
    add_arguments(p), run(args)                             the `vae-visdom replay` command

VisdomMonitor and TITLES are imported on first use (PEP 562), not with the package: the runs
home (monitor/home.py) runs in a process that never imports torch, and visdom_monitor does.
Importing this package imports visdom (the CLI skips it where visdom is missing).
"""
import importlib

from vae_visdom.monitor.replay import replay


def __getattr__(name: str):
    if name in ("VisdomMonitor", "TITLES"):
        return getattr(importlib.import_module("vae_visdom.monitor.visdom_monitor"), name)
    raise AttributeError(f"module 'vae_visdom.monitor' has no attribute {name!r}")
