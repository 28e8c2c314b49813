"""The signals that interrupt a run (SIGINT, SIGTERM, SIGUSR2), noted as they arrive, before the handler
that was there runs."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)


@contextlib.contextmanager
def observe_signals(note: Callable[[str], None] | None) -> Iterator[list[str]]:
    """Record SIGINT, SIGTERM and SIGUSR2 (note(name) at once: a kill may follow), then do what the
    handler before did (submitit's requeue, Python's KeyboardInterrupt); a signal whose default action
    ends the process ends it with SystemExit(128 + signal), so the interruption is recorded first. A
    signal the process ignores (SIGINT of a job a shell started in the background) stays ignored and
    unrecorded: it interrupts nothing. Yields the names received, in order."""
    received: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    before = {sig: signal.getsignal(sig) for sig in SIGNALS if signal.getsignal(sig) != signal.SIG_IGN}

    def handler(signum: int, frame: FrameType | None) -> Any:
        name = signal.Signals(signum).name
        received.append(name)
        if note is not None:
            note(name)
        previous = before[signal.Signals(signum)]
        if callable(previous):
            return previous(signum, frame)
        raise SystemExit(128 + signum)

    for sig in before:
        signal.signal(sig, handler)
    try:
        yield received
    finally:
        for sig, previous in before.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
