"""Claiming a run folder for a config: what its ledger says (finished here, resume, replace a config that
never trained, refuse another config's run or move it aside), and the folder made this attempt's."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from omegaconf import DictConfig

from bionn.config.schema import OnConfigChange
from bionn.run.setup import Setup, checked
from bionn.run_folder import (
    ATTEMPTS,
    BACKUP,
    FINISHED,
    HISTORY,
    LEDGER,
    ConfigChanged,
    RunFolder,
    Status,
    finished_validation_loss,
)
from bionn.slurm import Worker, slurm_info

log = logging.getLogger("bionn.train")


@dataclass(frozen=True)
class Claim:
    """What the folder's ledger says of a run of `config` there."""

    finished: dict | None = None  # this config's final results: it already finished here
    new_ledger: bool = False  # write the ledger: there is none yet, or this config replaces one
    move_aside: bool = False  # the folder holds another config's run: move it into previous/<n>/
    superseded: dict | None = None  # the ledger this config replaces (its runs never trained an epoch)


def claim(folder: RunFolder, config: dict, on_change: OnConfigChange) -> Claim:
    """Check the folder's ledger against `config` without writing anything. A folder whose runs of
    another config never committed an epoch (they failed or stopped first) takes the new config; one
    holding another config's training is refused (ConfigChanged), or moved aside with move_aside."""
    try:
        ledger = folder.check_ledger(config)
        if ledger is None and has_training(folder):
            raise ConfigChanged(
                f"{folder.path} holds training results but no ledger ({folder / LEDGER}: written by "
                "an older bionn?), so its config is unknown. Run into another folder, or add "
                "runtime.on_config_change=move_aside to move its contents into previous/<n>/ and start "
                "afresh."
            )
    except ConfigChanged:
        if folder.ledger() is not None and not has_training(folder):
            return Claim(new_ledger=True, superseded=folder.ledger())
        if on_change != OnConfigChange.move_aside:
            raise
        return Claim(new_ledger=True, move_aside=True)
    if ledger is None:
        return Claim(new_ledger=True)
    final = folder.final()
    if final is not None and Status(final["status"]) in FINISHED:
        return Claim(finished=final)
    return Claim()


def has_training(folder: RunFolder) -> bool:
    """True if the folder holds a finished run, a history or a resume point."""
    final = folder.final()
    finished = final is not None and Status(final["status"]) in FINISHED
    return finished or (folder / HISTORY).exists() or (folder / BACKUP).exists()


def finished_loss(folder: RunFolder, finished: dict) -> float:
    """The validation loss of the run that already finished in `folder` (its final results), said so."""
    log.info(
        "%s already finished (%s) with this config; nothing to do (runtime.on_config_change=move_aside "
        "with another config, or another folder, starts afresh)",
        folder.path,
        finished["status"],
    )
    return finished_validation_loss(finished)


def take(cfg: DictConfig, folder: RunFolder, claimed: Claim, worker: Worker) -> Setup | None:
    """Make the folder this attempt's: another config's run moved aside (after the checks passed: a
    config error moves nothing; returns their Setup), the folder made and, by the chief, the attempt
    begun. Returns None where the checks are still to run."""
    setup = None
    if claimed.move_aside:
        setup = checked(cfg, folder.path if worker.is_chief else None)
        if worker.is_chief:
            target = folder.move_aside()
            log.warning("moved the previous contents of %s into %s; starting afresh", folder.path, target)
    elif claimed.superseded is not None and worker.is_chief:
        log.warning(
            "%s held another config whose attempts ended before their first committed epoch; this config "
            "replaces it in %s once its checks pass (their records stay in %s)",
            folder.path,
            LEDGER,
            ATTEMPTS,
        )
    folder.path.mkdir(parents=True, exist_ok=True)
    if worker.is_chief:
        folder.begin_attempt(slurm_info())
    return setup
