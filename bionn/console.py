"""What a run shows: bionn's log records, and TensorFlow's C++ log kept to what a user can act on.

TensorFlow's C++ runtime writes straight to file descriptor 2: start-up notes
(oneDNN, CUDA stubs, CPU features), and on every evaluation a warning that an
iterator was cancelled, followed by a `[[{{node ...}}]]` fragment.
`quiet_tensorflow()` hides its INFO lines (TF_CPP_MIN_LOG_LEVEL=1, unless the
user chose a level) and drops the known harmless warnings and errors listed in
NOISE from descriptor 2, whatever level the user chose: absl writes some INFO
lines (oneDNN's) before it reads TF_CPP_MIN_LOG_LEVEL, so setting it to 3 alone
would let them through. Every other line, Python's own output and progress bars
included, passes unchanged.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import sys
import threading

log = logging.getLogger("bionn")

# Known harmless C++ lines (and the fragment lines that follow them).
NOISE = re.compile(
    r"|".join(
        [
            r"WARNING: All log messages before absl::InitializeLog\(\) is called",
            # INFO lines written before absl::InitializeLog bypass TF_CPP_MIN_LOG_LEVEL
            r"I\d{4} [\d:.]+ +\d+ \S+:\d+\]",
            r"To enable the following instructions: .* rebuild TensorFlow",
            r"[IW]\d{4} .*local_rendezvous\.cc.*(CANCELLED|OUT_OF_RANGE)",
            r"E\d{4} .*node_def_util\.cc.*use_unbounded_threadpool",
            r"W\d{4} .*dataset\.cc.*will not be optimized because the dataset does not implement",
            r"E\d{4} .*cuda_platform\.cc.*failed call to cuInit",
            r"\s*\[\[\{\{node ",
        ]
    )
)
_CPP_LINE = re.compile(rb"^[IWEF]\d{4} |^WARNING: All log messages")
_installed = False


def quiet_tensorflow() -> None:
    """Call before TensorFlow is imported; a TF_CPP_MIN_LOG_LEVEL the user set is kept."""
    global _installed
    if _installed:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    for name in ("tensorflow", "absl", "matplotlib", "h5py"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        _filter_descriptor(2)
    except OSError:  # no descriptor 2 to filter (e.g. closed): nothing to hide
        return
    _installed = True


def _filter_descriptor(fd: int) -> None:
    """Route descriptor `fd` through a pipe; a thread forwards all but NOISE lines to the original."""
    sys.stderr.flush()
    original = os.dup(fd)
    read_end, write_end = os.pipe()
    os.dup2(write_end, fd)
    os.close(write_end)

    def forward() -> None:
        try:
            _forward(read_end, original)
        except BaseException:  # never leave descriptor 2 pointing at a pipe no one drains
            os.dup2(original, fd)
            raise

    thread = threading.Thread(target=forward, name="bionn-stderr-filter", daemon=True)
    thread.start()

    def restore() -> None:
        sys.stderr.flush()
        os.dup2(original, fd)  # closes the pipe's last write end: the thread reads EOF and ends
        thread.join(timeout=2)

    atexit.register(restore)


def _forward(read_end: int, original: int) -> None:
    """Copy lines from read_end to original, less NOISE lines and the fragment lines that follow them."""
    pending = b""
    dropping = False
    while chunk := os.read(read_end, 65536):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        out = []
        for line in lines:
            text = line.decode(errors="replace")
            dropping = bool(NOISE.match(text)) or (dropping and text.startswith(("\t", " ")))
            if not dropping:
                out.append(line + b"\n")
        # a partial line that is no C++ log line (a progress bar's \r update) goes out now
        if pending and not _CPP_LINE.match(pending):
            out.append(pending)
            pending = b""
        if out:
            os.write(original, b"".join(out))
    if pending:
        os.write(original, pending)


def setup_logging() -> None:
    """Outside Hydra (which configures logging for its jobs), bionn's records still reach the console."""
    if not logging.getLogger().handlers and not log.handlers:
        logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    log.setLevel(logging.INFO)
