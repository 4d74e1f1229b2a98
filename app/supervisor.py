"""`loraboard up`'s children: started together, each restarted when it dies, with backoff.

One crashed worker (out of memory, a killed process) used to stop the whole stack. Now
the child alone is started again: after 1 s, then 2, 4, ... up to MAX_BACKOFF_S while it
keeps dying at once; a child that ran for STABLE_AFTER_S before dying starts over at 1 s.
Every start and every exit is logged on stdout, with the process id.
"""

from __future__ import annotations

import signal
import subprocess
import time
from dataclasses import dataclass, field

FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0
STABLE_AFTER_S = 60.0
TICK_S = 0.5


def say(message: str) -> None:
    print(f"loraboard up: {message}", flush=True)


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    backoff_s: float = FIRST_BACKOFF_S
    restart_at: float | None = None
    restarts: int = field(default=0)

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv)
        self.started_at, self.restart_at = time.monotonic(), None
        say(f"started {self.name} (pid {self.process.pid})")

    def check(self, now: float) -> None:
        """Schedule a restart when the process has exited; start it when its backoff has passed."""
        if self.restart_at is not None:
            if now >= self.restart_at:
                self.restarts += 1
                self.start()
            return
        assert self.process is not None
        code = self.process.poll()
        if code is None:
            return
        if now - self.started_at >= STABLE_AFTER_S:
            self.backoff_s = FIRST_BACKOFF_S
        pid = self.process.pid
        say(f"{self.name} (pid {pid}) exited with code {code}; restarting in {self.backoff_s:g} s")
        self.restart_at = now + self.backoff_s
        self.backoff_s = min(self.backoff_s * 2, MAX_BACKOFF_S)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()

    def wait(self, timeout_s: float) -> int:
        if self.process is None:
            return 0
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def supervise(children: list[Child]) -> int:
    """Run until SIGTERM or SIGINT; then stop every child and return the worst exit code."""
    stopping = False

    def stop(*_args: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for child in children:
        child.start()
    try:
        while not stopping:
            now = time.monotonic()
            for child in children:
                child.check(now)
            time.sleep(TICK_S)
    finally:
        for child in children:
            child.stop()
        codes = [child.wait(30) for child in children]
    say("stopped")
    return max((code for code in codes if code > 0), default=0)
