"""`vae-visdom train --nproc-per-node N`: a thin front that runs torch's own launcher (torch.distributed.run).

It adds nothing of its own but the signals and the exit status (see run_torchrun):
`vae-visdom train --nproc-per-node 2 --max-restarts 1 ARGS` runs
`python -m torch.distributed.run --standalone --nproc-per-node 2 --max-restarts 1 -m vae_visdom train ARGS`.
Several nodes: call torchrun yourself with its rendezvous flags (README, "Scaling out").
Also here, for the workers torchrun starts: a rank other than 0 never imports visdom (`quiet_rank`),
and a group torchrun restarts after a fault resumes its run folder from the last checkpoint
(`resume_after_restart`).
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from vae_visdom.config import UsageError, argparse_type

FRONT_FLAGS = ("--nproc-per-node", "--max-restarts")
EXIT_DIVERGED = 3  # `train`: the loss turned NaN/inf and the run ended as "diverged" (1: failed, 2: refused)
AGREED = (EXIT_DIVERGED,)  # endings every rank reaches at the same step (the numbers judged are global)
ENV_OUTCOME = "VAE_VISDOM_OUTCOME_FILE"  # set by the front: where rank 0 leaves an agreed ending's status


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("scale out (data-parallel, through torch.distributed.run)")
    g.add_argument("--nproc-per-node", type=argparse_type("nproc_per_node"), default=None, metavar="N",
                   help="start N ranks on this machine under torchrun (gloo on the CPU, nccl with one GPU per rank); "
                        "--batch-size is the global batch")
    g.add_argument("--max-restarts", type=int, default=0, metavar="K",
                   help="with --nproc-per-node: restart the group up to K times after a rank dies; it resumes "
                        "from its last checkpoint (give --out or --name so the restart finds it)")


def torchrun_command(argv: list[str], nproc: int, max_restarts: int) -> list[str]:
    """The torch.distributed.run command line for `vae-visdom ARGV` (ARGV starts with "train")."""
    rest, skip = [], False
    for arg in argv[argv.index("train") + 1:]:
        if skip:
            skip = False
        elif arg in FRONT_FLAGS:
            skip = True
        elif not arg.startswith(tuple(f + "=" for f in FRONT_FLAGS)):
            rest.append(arg)
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            f"--max-restarts={max_restarts}", "-m", "vae_visdom", "train", *rest]


def run_torchrun(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    """Run torch's launcher as a child and return its exit status.

    A child, not an exec, for the signals: a terminal's Ctrl-C goes to its whole foreground process
    group, and torch's launcher answers SIGINT (or SIGTERM) by raising SignalException: it tears its
    workers down, prints ~30 lines of traceback and exits 1, even though the ranks stopped cleanly
    with a checkpoint. So the launcher runs in a session of its own (out of the terminal's reach; it
    starts its workers in sessions of their own too) and this front hands SIGINT and SIGTERM to
    rank 0 alone, as if it were a single-process run: rank 0 stops the group at the next step (the
    stop reaches the other ranks with every step's command broadcast, train/distributed.py), both
    exit 0, the launcher exits 0, and so does this command, with the one "run stopped" line. A
    second SIGINT aborts, as it does for one process. Should this front die, the launcher gets
    SIGTERM (Linux: PR_SET_PDEATHSIG) and ends the group.

    An ending all ranks agree on (a diverged run, exit 3) is not a failure of the group: the ranks exit
    0, so the launcher prints no failure report, and rank 0 leaves the status in a file (ENV_OUTCOME)
    that this front exits with (see exit_rank)."""
    if args.nproc_per_node < 1 or args.max_restarts < 0:
        raise UsageError("--nproc-per-node must be >= 1 and --max-restarts >= 0")
    if args.max_restarts and not (args.out or args.name or args.resume):
        raise UsageError("--max-restarts needs --out or --name, so a restarted group finds its run folder")
    cmd = torchrun_command(list(sys.argv[1:] if argv is None else argv), args.nproc_per_node, args.max_restarts)
    print("launching: " + " ".join(cmd[1:]), file=sys.stderr, flush=True)
    sys.stdout.flush()
    fd, outcome = tempfile.mkstemp(prefix="vae-visdom-outcome-")
    os.close(fd)
    agent = subprocess.Popen(cmd, start_new_session=True, preexec_fn=_end_with_parent,
                             env={**os.environ, ENV_OUTCOME: outcome})

    def forward(signum, frame):
        for pid in _rank_zero(agent.pid) or [agent.pid]:  # no rank yet: the launcher itself ends the group
            try:
                os.kill(pid, signum)
            except OSError:  # gone meanwhile
                pass

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = agent.wait()
        if code == 0:
            with open(outcome, encoding="utf-8") as f:
                said = f.read().strip()
            code = int(said) if said.isdigit() and int(said) in AGREED else 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        try:
            os.unlink(outcome)
        except OSError:
            pass
    return code if code >= 0 else 128 - code  # killed by a signal: as a shell reports it


def _end_with_parent() -> None:
    """In the launcher's child process: SIGTERM when this front dies (Linux; elsewhere nothing)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _rank_zero(agent: int) -> list[int]:
    """The pid of the launcher's worker with RANK=0 (read from /proc: Linux), or [] when none is seen."""
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
            if int(stat[stat.rindex(b")") + 2:].split()[1]) != agent:  # field 4: the parent's pid
                continue
            with open(f"/proc/{pid}/environ", "rb") as f:
                if b"RANK=0" in f.read().split(b"\0"):
                    return [int(pid)]
        except (OSError, ValueError, IndexError):
            continue
    return []


def quiet_rank() -> None:
    """Under torchrun, a rank other than 0 must not import visdom: block it, so the CLI's optional
    imports of the visdom subcommands are skipped (as where visdom is not installed)."""
    if os.environ.get("RANK", "0") != "0":
        sys.modules.setdefault("visdom", None)  # type: ignore[arg-type]  # `import visdom` now raises ImportError


def resume_after_restart(args: argparse.Namespace) -> None:
    """In a group torchrun restarted after a fault, continue the run folder from its checkpoint."""
    if int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) == 0 or args.resume:
        return
    if not (args.out or args.name):
        print("warning: restarted by torchrun without --out or --name: a new run starts", file=sys.stderr)
        return
    run_dir = Path(args.out) if args.out else Path(args.runs_dir or "runs") / args.name
    if (run_dir / "checkpoint.pt").exists():
        args.resume = str(run_dir)
        if os.environ.get("RANK", "0") == "0":
            print(f"restart {os.environ['TORCHELASTIC_RESTART_COUNT']}: resuming {run_dir} from its checkpoint",
                  file=sys.stderr, flush=True)


def exit_rank(code: int) -> None:
    """Under torchrun, after the command returned: leave the process group and end this process at once,
    skipping the interpreter's teardown, where gloo's threads, still joinable while C++ objects are
    destroyed, sometimes abort the rank ('terminate called without an active exception', SIGABRT) after
    a clean run (seen in CI twice; the atexit handler in train/distributed.py was not enough). Nothing
    to do in a process that never joined a group; torch is not imported here."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return
    outcome = os.environ.get(ENV_OUTCOME)
    if outcome and code in AGREED:  # every rank ends so at the same step: for the launcher, a clean end
        if os.environ.get("RANK", "0") == "0":
            try:
                with open(outcome, "w", encoding="utf-8") as f:
                    f.write(str(code))
            except OSError:  # the front then exits 0; status.json still says diverged
                pass
        code = 0
    try:
        dist.destroy_process_group()
    except Exception:  # a peer already gone: nothing left to release
        pass
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
