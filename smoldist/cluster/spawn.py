"""Running one node's launch (`accelerate launch ...`) for `smoldist train`: stop signals reach the trainers, and a
rank's one-line refusal ends the job as that one line.

Outside Slurm the launcher runs in a session of its own, so Ctrl-C in a terminal reaches `smoldist train` alone; it
passes Ctrl-C, SIGTERM and SIGHUP straight to the trainer processes (the launcher's children; torchrun starts them
in sessions of their own): they finish the step, checkpoint and exit 0, and the launcher ends quietly (signalled
itself, it would raise and print a traceback). The node then exits 3 ("stopped; run again to resume"), as one
process does. A second Ctrl-C ends the launch at once: one line, exit 130. Under Slurm nothing is forwarded: Slurm
signals every process of the step itself (a second SIGTERM would cut torchrun's shutdown short).

A rank that refuses its input prints `smoldist: error: ...` and exits 2: the launcher's ~30-line report of the
failed child is dropped, and so are the other ranks' copies of the line; the node exits with the rank's status.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading

from smoldist.distributed.preemption import INTERRUPTED_EXIT_CODE, STOPPED_EXIT_CODE
from smoldist.distributed.state import tell_deepspeed_no_gpu, under_launcher

STOPS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
ONE_LINERS = (b"smoldist: error:", b"smoldist train: interrupted")  # a rank's last word (cli.main); what follows
EXIT_STATUS = re.compile(rb"exitcode\s*:\s*(\d+)")  # torchrun's report of the failed rank: "exitcode  : 2 (pid: 7)"


def send(pids: list[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):  # ended meanwhile: a raise would end the wait with a traceback
            os.kill(pid, signum)


def children(pid: int) -> list[int]:
    """Direct children of `pid` (the trainers of a local launcher), read from /proc."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:  # gone meanwhile
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry))
    return found


class OneLineErrors:
    """Copies the launch's stderr to ours until a rank's one-line error; after it, only smoldist lines not yet seen
    (the launcher's traceback and the other ranks' copies are kept in `dropped`, for the rank's exit status)."""

    def __init__(self, source, sink=None) -> None:
        self.source, self.sink = source, sink or sys.stderr.buffer
        self.refused, self.seen, self.dropped, self.pending = False, set(), b"", b""
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        while chunk := os.read(self.source.fileno(), 65536):
            self.feed(chunk)
        self.feed(b"\n" if self.pending else b"")

    def feed(self, chunk: bytes) -> None:
        data = self.pending + chunk
        cut = max(data.rfind(b"\n"), data.rfind(b"\r")) + 1  # progress bars redraw after \r: pass them on too
        self.pending = data[cut:]
        for line in data[:cut].splitlines(keepends=True):
            self._line(line)
        self.sink.flush()

    def _line(self, line: bytes) -> None:
        text = line.strip()
        if not self.refused and not text.startswith(ONE_LINERS):
            self.sink.write(line)
        elif text.startswith((b"smoldist ", b"smoldist:")) and text not in self.seen:  # not "smoldist.train FAILED"
            self.refused = self.refused or text.startswith(ONE_LINERS)
            self.seen.add(text)
            self.sink.write(text + b"\n")
        else:
            self.dropped += line

    def exit_status(self, returncode: int) -> int:
        """The failed rank's own status (2: bad input) rather than the launcher's 1."""
        if not (self.refused and returncode):
            return returncode
        found = EXIT_STATUS.search(self.dropped)
        return int(found.group(1)) if found else returncode


def spawn(plan, machine_rank: int) -> int:
    """Run this node's command of `plan` (cluster/launcher.py), as the module docstring says; its exit status.

    SIGUSR1 (Slurm's warning before the time limit) is ignored here, and so by accelerate and torchrun, which inherit
    that: its default action would kill them. The trainers install their own handler and checkpoint."""
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    env = dict(os.environ, **plan.env())
    tell_deepspeed_no_gpu(env)
    print(f"smoldist train: {plan.node_line(machine_rank)}", flush=True)  # the line --dry-run prints
    forward = not under_launcher()
    child = subprocess.Popen(plan.command(machine_rank), env=env, stderr=subprocess.PIPE, start_new_session=forward)
    errors = OneLineErrors(child.stderr)
    stops: list[int] = []

    def on_stop(signum, _frame) -> None:
        if not forward:
            return
        if signum == signal.SIGINT and signal.SIGINT in stops:  # a second Ctrl-C: everything ends now
            os.write(2, b"smoldist train: interrupted again: stopped at once; the last complete checkpoint is kept\n")
            send([*children(child.pid), child.pid], signal.SIGKILL)
            stops.append(-1)
            return
        stops.append(signum)
        send(children(child.pid) or [child.pid], signum)  # trainers not started yet: the launcher passes it on

    previous = {sig: signal.signal(sig, on_stop) for sig in STOPS}
    try:
        returncode = child.wait()  # the handlers return normally, so the wait resumes after each signal (PEP 475)
        errors.thread.join(timeout=10)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if -1 in stops:
        return INTERRUPTED_EXIT_CODE
    if stops and returncode == 0:
        return STOPPED_EXIT_CODE  # every rank saved and exited 0, as ranks under a launcher do
    return errors.exit_status(returncode)
