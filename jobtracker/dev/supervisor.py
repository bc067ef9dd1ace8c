"""Child processes with prefixed output, stopped together: what ``./dev run`` runs.

A signal (Ctrl-C, SIGTERM, SIGHUP) asks every child to stop with SIGTERM; a
second one asks again (RQ's cold shutdown), a third kills. So does waiting
longer than ``JOBTRACKER_STOP_GRACE`` seconds (20). A child that exits on its
own is a failure: everything else is stopped and nothing is restarted, so a
crash is seen rather than hidden behind a restart loop.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

STOP_GRACE = float(os.environ.get("JOBTRACKER_STOP_GRACE", "20"))


def say(message: str) -> None:
    """Print one line of the launcher's own (``[dev] …``)."""
    print(f"[dev] {message}", flush=True)


def parent_death_signal() -> Callable[[], None] | None:
    """A preexec_fn that makes a child get SIGTERM if the launcher dies (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)

    return preexec


@dataclass
class Child:
    """One supervised process: its name (the output prefix) and command line."""

    name: str
    argv: list[str]
    proc: subprocess.Popen | None = None
    buffer: bytes = b""
    returncode: int | None = None
    open_pipe: bool = field(default=False)


class Supervisor:
    """Runs children with prefixed output; one signal stops them all (see the module).

    ``run()`` returns 1 when a child exited on its own, else 0.
    """

    def __init__(
        self,
        children: list[Child],
        *,
        cwd: Path,
        env: dict[str, str],
        on_tick: Callable[[], None] | None = None,
    ):
        self.children = children
        self.cwd = cwd
        self.env = env
        self.on_tick = on_tick
        self.selector = selectors.DefaultSelector()
        self.width = max(len(c.name) for c in children)
        self.stop_reason: str | None = None
        self.failed = False
        self.signals: list[int] = []
        self.stop_started = 0.0
        self.escalation = 0

    def _print(self, child: Child, line: bytes) -> None:
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        sys.stdout.write(f"{child.name:<{self.width}} | {text}\n")
        sys.stdout.flush()

    def start(self) -> None:
        preexec = parent_death_signal()
        for child in self.children:
            child.proc = subprocess.Popen(
                child.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                process_group=0,  # Ctrl-C reaches the launcher only; it forwards SIGTERM once
                preexec_fn=preexec,
            )
            assert child.proc.stdout is not None  # stdout=PIPE
            os.set_blocking(child.proc.stdout.fileno(), False)
            self.selector.register(child.proc.stdout, selectors.EVENT_READ, child)
            child.open_pipe = True

    def _read(self, child: Child) -> None:
        assert child.proc is not None and child.proc.stdout is not None
        try:
            chunk = os.read(child.proc.stdout.fileno(), 65536)
        except BlockingIOError:
            return
        if not chunk:
            self._close(child)
            return
        child.buffer += chunk
        *lines, child.buffer = child.buffer.split(b"\n")
        for line in lines:
            self._print(child, line)

    def _close(self, child: Child) -> None:
        if child.buffer:
            self._print(child, child.buffer)
            child.buffer = b""
        if child.open_pipe:
            assert child.proc is not None and child.proc.stdout is not None
            self.selector.unregister(child.proc.stdout)
            child.proc.stdout.close()
            child.open_pipe = False

    def _signal_all(self, sig: int) -> None:
        for child in self.children:
            if child.proc is not None and child.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.proc.pid, sig)

    def request_stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
            self.stop_started = time.monotonic()
            say(f"{reason}: stopping {', '.join(c.name for c in self.children)} ...")
            self._signal_all(signal.SIGTERM)

    def _escalate(self) -> None:
        """Second step: SIGTERM again (RQ's cold shutdown); third: SIGKILL."""
        self.escalation += 1
        self.stop_started = time.monotonic()
        if self.escalation == 1:
            say("Still stopping: asking again (RQ cold shutdown); once more to kill.")
            self._signal_all(signal.SIGTERM)
        else:
            say("Killing what is left.")
            self._signal_all(signal.SIGKILL)

    def run(self) -> int:
        handlers = {}
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            handlers[sig] = signal.signal(sig, lambda s, _f: self.signals.append(s))
        try:
            self.start()
            return self._loop()
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            self._signal_all(signal.SIGKILL)  # only reached with live children on errors

    def _loop(self) -> int:
        exited_at: float | None = None
        while True:
            for key, _events in self.selector.select(timeout=0.2):
                self._read(key.data)
            while self.signals:
                sig = self.signals.pop(0)
                if self.stop_reason is None:
                    self.request_stop(f"Got {signal.Signals(sig).name}")
                else:
                    self._escalate()
            for child in self.children:
                assert child.proc is not None  # started
                if child.returncode is None and child.proc.poll() is not None:
                    child.returncode = child.proc.returncode
                    if self.stop_reason is None:
                        self.failed = True
                        self.request_stop(
                            f"{child.name} exited unexpectedly (code {child.returncode})"
                        )
            if self.stop_reason is not None and time.monotonic() - self.stop_started > STOP_GRACE:
                self._escalate()
            if all(c.returncode is not None for c in self.children):
                # Drain what is left in the pipes (a grandchild may hold one
                # open, so do not wait for EOF forever).
                exited_at = exited_at or time.monotonic()
                if not any(c.open_pipe for c in self.children) or time.monotonic() - exited_at > 1:
                    for child in self.children:
                        self._close(child)
                    break
            elif self.stop_reason is None and self.on_tick is not None:
                self.on_tick()
        for child in self.children:
            say(f"{child.name} exited with code {child.returncode}")
        return 1 if self.failed else 0
