"""Repeats: runs whose overrides differ only in runtime.seed, grouped with the mean and spread of each metric.

A group is every finished job (completed or early stopped) sharing all overrides but `runtime.seed=...`,
when at least two of them ran with distinct seeds (`python train.py -m runtime.seed=0,1,2 ...`). Every
scalar metric the jobs report (best_val_loss and the test metrics) gets its mean and its sample standard
deviation (ddof 1) over the group: the table in summary.md, repeats.csv and repeats.png.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from bionn.io import figure, write_figure
from bionn.report.read import JobSummary, is_number
from bionn.run_folder import Status

SEED = "runtime.seed="
REPEAT_FILES = ("repeats.csv", "repeats.png")
# Not a property of the run: the same for every seed of a dataset.
_CONSTANT = ("test_ceiling_r2", "test_ridge_r2")
_COUNTED = {Status.COMPLETED.value, Status.EARLY_STOPPED.value}


@dataclass
class RepeatGroup:
    """Finished jobs that differ only in runtime.seed."""

    overrides: list[str]  # shared by the group's jobs (the seed left out)
    jobs: list[JobSummary]

    @property
    def seeds(self) -> list[str]:
        """The group's seeds, in the order of its jobs."""
        return [_seed(job) or "?" for job in self.jobs]

    def metrics(self) -> dict[str, tuple[float, float]]:
        """{metric: (mean, sample std)} of every scalar metric that all the group's jobs report."""
        values: dict[str, list[float]] = {}
        for job in self.jobs:
            scalars = {"best_val_loss": job.best_val_loss, **{f"test_{k}": v for k, v in job.test.items()}}
            for key, value in scalars.items():
                if is_number(value) and math.isfinite(value) and not key.startswith(_CONSTANT):
                    values.setdefault(key, []).append(float(value))
        return {
            key: (statistics.fmean(v), statistics.stdev(v))
            for key, v in values.items()
            if len(v) == len(self.jobs)
        }


def _seed(job: JobSummary) -> str | None:
    return next((o.removeprefix(SEED) for o in job.overrides if o.startswith(SEED)), None)


def repeat_groups(jobs: list[JobSummary]) -> list[RepeatGroup]:
    """The groups of finished jobs that differ only in runtime.seed, in order of their first job."""
    groups: dict[tuple[str, ...], list[JobSummary]] = {}
    for job in jobs:
        if job.status in _COUNTED and _seed(job) is not None:
            key = tuple(o for o in job.overrides if not o.startswith(SEED))
            groups.setdefault(key, []).append(job)
    return [
        RepeatGroup(list(key), members)
        for key, members in groups.items()
        if len({_seed(j) for j in members}) == len(members) >= 2
    ]


def repeats_csv(groups: list[RepeatGroup]) -> str:
    """One row per group: overrides, n, seeds, jobs, then <metric>_mean and <metric>_std."""
    records = []
    for group in groups:
        record: dict = {
            "overrides": " ".join(group.overrides),
            "n": len(group.jobs),
            "seeds": " ".join(group.seeds),
            "jobs": " ".join(j.job for j in group.jobs),
        }
        for key, (mean, std) in group.metrics().items():
            record[f"{key}_mean"], record[f"{key}_std"] = mean, std
        records.append(record)
    columns = list(dict.fromkeys(k for r in records for k in r))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()


def write_repeats_png(groups: list[RepeatGroup], path: Path) -> None:
    """repeats.png at `path`: test R-squared per group, mean with a +-1 std bar, each seed's value a dot."""
    fig, ax = figure(figsize=(8, max(3.0, 0.5 * len(groups) + 1.5)))
    names = set()
    for row, group in enumerate(groups):
        values = [r2[1] for r2 in (job.test_r2() for job in group.jobs) if r2]
        names |= {r2[0] for r2 in (job.test_r2() for job in group.jobs) if r2}
        if len(values) >= 2:
            mean, std = statistics.fmean(values), statistics.stdev(values)
            ax.barh(row, mean, xerr=std, color="tab:blue", alpha=0.6, capsize=4)
            ax.text(mean, row, f" {mean:.3f} +- {std:.3f} (n={len(values)})", va="bottom", fontsize=8)
        ax.plot(values, [row] * len(values), "k.", markersize=6)
    labels = [" ".join(g.overrides) or "(no other override)" for g in groups]
    ax.set_yticks(range(len(groups)), [label[:50] for label in labels], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("test " + (" / ".join(sorted(names)) or "R-squared") + " (mean +- std over seeds)")
    ax.set_title("repeats: runs differing only in runtime.seed")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    write_figure(fig, path)
