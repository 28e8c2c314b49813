"""A recorded end is a type (bionn.outcome): bionn.train recorded the attempt and said so, so the entry
point ends it in no more words; an end nothing recorded still gets its one paragraph."""

from __future__ import annotations

import logging
import signal

import pytest

from bionn.config.errors import ConfigError
from bionn.outcome import RecordedFailure, RecordedInterrupt, end_cleanly


def ended(job, caplog) -> tuple[int, list[str]]:
    """end_cleanly(job) outside Hydra: its exit code and bionn's log lines."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="bionn"), pytest.raises(SystemExit) as exit_:
        end_cleanly(job)
    return exit_.value.code, [r.getMessage() for r in caplog.records if r.name == "bionn"]


def raising(err: BaseException):
    def job():
        raise err

    return job


def test_a_recorded_end_says_nothing_more_and_an_unrecorded_one_its_paragraph(caplog, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    failure = RecordedFailure(ConfigError("conf/x.yaml: training.epochs = 0 is invalid"))
    assert failure.error.args == ("conf/x.yaml: training.epochs = 0 is invalid",) and str(failure) == str(
        failure.error
    )
    assert ended(raising(failure), caplog) == (1, [])
    assert ended(raising(ConfigError("conf/x.yaml: bad")), caplog) == (1, ["conf/x.yaml: bad"])
    assert ended(raising(RecordedInterrupt()), caplog) == (128 + signal.SIGINT, [])
    assert ended(raising(KeyboardInterrupt()), caplog) == (
        128 + signal.SIGINT,
        ["interrupted by SIGINT before training began; nothing was written"],
    )
    assert isinstance(RecordedInterrupt(), KeyboardInterrupt)  # to every other caller, Ctrl-C as before
