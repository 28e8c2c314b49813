"""Whether a process recorded in an attempt still lives (on this host: a pid means nothing elsewhere)."""

from __future__ import annotations

import os
import socket


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def dead_here(attempt: dict) -> bool:
    """An unfinished attempt whose process no longer exists on this host."""
    pid = attempt.get("pid")
    return attempt.get("host") == socket.gethostname() and isinstance(pid, int) and not process_alive(pid)
