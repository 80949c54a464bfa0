"""Ctrl-C while a solver runs in native code.

A solver running in C++ on the calling thread keeps Python's SIGINT handler from
running until it returns; run on a worker thread while the calling thread waits,
KeyboardInterrupt arrives at once and can stop the solve with its best answer so far.
model-sched's MILP/CP-SAT backends and model-place's CP-SAT placer share this."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


def wait_interruptibly(done: Callable[[float], bool], cancel: Callable[[], None]) -> bool:
    """Wait until ``done(timeout)`` is true; on Ctrl-C call ``cancel`` (once) and keep
    waiting for the solver to stop. Returns whether Ctrl-C was pressed."""
    interrupted = False
    while True:
        try:
            if done(0.1):
                return interrupted
        except KeyboardInterrupt:
            if not interrupted:
                interrupted = True
                cancel()


def call_interruptibly(work: Callable[[], Any], cancel: Callable[[], None]) -> tuple[Any, bool]:
    """``(work(), interrupted)``: ``work`` runs on a worker thread; Ctrl-C meanwhile calls
    ``cancel`` and waits for ``work`` to return (see :func:`wait_interruptibly`). An
    exception of ``work`` is raised here."""
    box: list = []
    # an event, not Thread.join: a KeyboardInterrupt inside join() can leave
    # is_alive() false while the thread still runs (CPython < 3.13)
    finished = threading.Event()

    def run() -> None:
        try:
            box.append(work())
        except BaseException as e:  # re-raised on the calling thread
            box.append(e)
        finally:
            finished.set()

    threading.Thread(target=run, daemon=True).start()
    interrupted = wait_interruptibly(finished.wait, cancel)
    if isinstance(box[0], BaseException):
        raise box[0]
    return box[0], interrupted
