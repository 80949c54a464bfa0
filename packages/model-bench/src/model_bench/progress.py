"""Progress lines on stderr for the slow stages of a benchmark (capture, solve, sweep).

Plain lines rather than a progress-bar library: stages are few and long, and their
durations are what a user wants to see; lines also survive being piped to a log.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import TextIO


class Progress:
    """Writes ``[model] stage ...`` when a stage starts and its duration when it ends.

    ``quiet`` silences everything (tests, ``--quiet``); timings are still returned.
    """

    def __init__(self, stream: TextIO | None = None, *, quiet: bool = False, prefix: str = ""):
        self.stream = sys.stderr if stream is None else stream
        self.quiet = quiet
        self.prefix = prefix

    def say(self, message: str) -> None:
        if not self.quiet:
            print(f"{self.prefix}{message}", file=self.stream, flush=True)

    @contextlib.contextmanager
    def stage(self, name: str, seconds: dict[str, float]) -> Iterator[None]:
        """Time the block, store the seconds under ``name`` and report them."""
        self.say(f"{name} ...")
        t0 = time.perf_counter()
        try:
            yield
        finally:
            seconds[name] = time.perf_counter() - t0
        self.say(f"{name} done in {seconds[name]:.2f} s")
