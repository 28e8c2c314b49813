"""Sweep report: one row per run folder under a run or multirun folder.

`bionn-report DIR` (or `python -m bionn.report DIR`) reads every run folder under
DIR and writes into DIR `summary.csv`, `summary.md` and `summary.png` (test
R-squared per job, validation-loss curves overlaid), and prints the table.
`SweepReport`, a Hydra callback listed in conf/train.yaml, does the same when a
multirun ends and then exits non-zero if any job failed. `bionn-report DIR --watch`
shows every job's state in a sweep folder (sweep.json, the run folders, squeue)
until all have ended; it writes nothing (docs/sweeps.md). In a search folder (one holding
search.json, docs/search.md) it also writes search.csv, best.yaml and search.png, prints
the trials by objective, and --watch shows the trials and the search's workers.

    read.py           run folders -> JobSummary (through bionn.run_folder; never raises), each sweep
                      job's --watch state, the baseline rows
    render.py         JobSummary -> table, summary.md, summary.csv, summary.png (and the sections on
                      bionn-evaluate's evaluations and on repeats)
    repeats.py        runs differing only in runtime.seed -> mean and std per metric, repeats.csv, repeats.png
    search.py         a search folder's record and study -> SearchSummary (its trials, best first)
    search_render.py  SearchSummary -> the trials' markdown, search.csv, best.yaml, search.png
    search_watch.py   --watch on a search: the trials' progress, each worker from worker.json and squeue
    cli.py            write_report, the command line and the Hydra callback

Everything is read from disk (with submitit the jobs ran in other processes). A search is read
through bionn.search (folder.py, space.py), the layer below the report. The report imports no
training code and loads neither Numba nor TensorFlow, but for read.ridge_baseline: the one place
that loads the data engine (bionn.baseline), lazily, to look up the cached ridge baseline of the
runs' datasets.
"""

from bionn.report.cli import SUMMARY_FILES, SweepReport, main, write_report
from bionn.report.read import JobSummary, collect

__all__ = ["SUMMARY_FILES", "JobSummary", "SweepReport", "collect", "main", "write_report"]
