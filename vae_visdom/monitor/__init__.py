"""The live run's visdom observer: its windows, the control panel, the view pane, the event socket.

    VisdomMonitor(server, port, env, run_dir, controller)  an events.Callback

VisdomMonitor and TITLES are imported on first use (PEP 562), not with the package: the pages built from run
folders (pages/) use the board and the windows in processes that never import torch, and visdom_monitor does.
"""
import importlib


def __getattr__(name: str):
    if name in ("VisdomMonitor", "TITLES"):
        return getattr(importlib.import_module("vae_visdom.monitor.visdom_monitor"), name)
    raise AttributeError(f"module 'vae_visdom.monitor' has no attribute {name!r}")
