"""Control latency: from the browser's websocket message to the trainer applying the command.

Starts a visdom server on a free loopback port, trains the default VAE on MNIST streaming to it,
and sends learning-rate changes exactly as visdom's page does (a `forward_to_vis` PropertyUpdate
on /socket). For each, the latency is the time from sending the message to the moment the
trainer applied it (CommandEvent: submission time + its own latency_ms), set against the median
duration of one training step in the same run.

    .venv/bin/python benchmarks/control_latency.py [--commands 20] [--batch-size 128]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--commands", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--gap", type=float, default=0.3, help="seconds between two commands")
    args = p.parse_args()

    import websocket

    from vae_visdom.config import TrainConfig
    from vae_visdom.data import load_dataset
    from vae_visdom.monitor.panel import ROWS
    from vae_visdom.serve.net import find_free_port, server_answers
    from vae_visdom.session import TrainingSession
    from vae_visdom.train.events import Callback

    tmp = Path(tempfile.mkdtemp(prefix="latency-"))
    port = find_free_port()
    server = subprocess.Popen([sys.executable, "-m", "vae_visdom.serve.server", "--port", str(port), "--env-path",
                               str(tmp / "envs")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not server_answers("127.0.0.1", port):
            if time.monotonic() > deadline:
                raise SystemExit("the visdom server did not start")
            time.sleep(0.2)
        applied: list[tuple[float, float]] = []  # (wall time applied, latency submit->apply in ms)
        steps_between: list[int] = []  # optimizer steps started between submission and application
        submitted_at: dict[float, int] = {}  # submission wall time -> trainer step then
        steps: list[float] = []

        class Watch(Callback):
            def __init__(self):
                self.last = None

            def on_command(self, event):
                if event.accepted and event.name == "lr":
                    applied.append((event.time + event.latency_ms / 1000.0, event.latency_ms))
                    steps_between.append(event.step - submitted_at.get(event.time, event.step))

        cfg = TrainConfig(epochs=1000, batch_size=args.batch_size, port=port, env="latency",
                          out=str(tmp / "run"), views=False)
        session = TrainingSession(cfg, data=load_dataset("mnist"), callbacks=[Watch()], progress=False)
        def timed(step):
            def timed_step(x):
                t0 = time.perf_counter()
                out = step(x)
                steps.append(time.perf_counter() - t0)
                return out
            return timed_step

        session.trainer.wrap_step(timed)
        submit = session.controller.submit

        def recording_submit(*a, **kw):
            step = session.trainer.step
            cmd = submit(*a, **kw)
            submitted_at[cmd.wall_time] = step
            return cmd

        session.controller.submit = recording_submit
        thread = threading.Thread(target=session.run, daemon=True)
        thread.start()
        while len(steps) < 50:
            time.sleep(0.05)
        win = session.monitor.windows["control"]
        ws = websocket.create_connection(f"ws://127.0.0.1:{port}/socket", timeout=5)
        sent: list[float] = []
        for i in range(args.commands):
            lr = f"{1e-3 * (0.9 ** (i + 1)):.6g}"
            msg = {"cmd": "forward_to_vis", "data": {"target": win, "eid": "latency", "event_type": "PropertyUpdate",
                                                      "propertyId": ROWS.index("lr"), "value": lr}}
            sent.append(time.time())
            ws.send(json.dumps(msg))
            time.sleep(args.gap)
        deadline = time.monotonic() + 10
        while len(applied) < args.commands and time.monotonic() < deadline:
            time.sleep(0.05)
        ws.close()
        session.controller.stop(source="benchmark")
        thread.join(60)
    finally:
        server.terminate()
        server.wait(15)

    if len(applied) < len(sent):
        print(f"only {len(applied)} of {len(sent)} commands were applied")
        return 1
    total_ms = [(a - s) * 1000.0 for (a, _), s in zip(applied, sent)]
    queue_ms = [q for _, q in applied]
    step_ms = statistics.median(steps) * 1000.0
    print(f"commands: {len(total_ms)}, batch size {args.batch_size}, device cpu")
    print(f"browser message -> applied: median {statistics.median(total_ms):.2f} ms, max {max(total_ms):.2f} ms")
    print(f"  of which controller queue -> applied: median {statistics.median(queue_ms):.2f} ms")
    print(f"one training step: median {step_ms:.2f} ms")
    print(f"latency / step: median {statistics.median(total_ms) / step_ms:.2f}, max {max(total_ms) / step_ms:.2f}")
    print(f"optimizer steps completed between submission and application: max {max(steps_between)} "
          f"(0: applied before the next step; 1: the step under way finished first)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
