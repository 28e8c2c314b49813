"""The asynchronous search (hparams_search=TR) against batch-synchronous trials and the seed models.

One run, on this machine, of three parts with the same data and the same per-trial budget
(dmedium's distribution, seed label, `--train-samples` fresh training samples per epoch for
`--epochs` epochs, `--val-samples` validation and `--test-samples` test samples; pruner off,
so every trial trains its whole budget):

1. async: `train.py -m hparams_search=TR hydra/launcher=local` with `--trials` trials and
   `--workers` W worker processes, each claiming the next trial as soon as its last one ends.
2. batch: the SAME trials (each trial's `overrides` user attribute: its full override list),
   batch-synchronously as hydra-optuna-sweeper runs them: batches of W trials in trial-number
   order, each batch W concurrent single-run `train.py` processes, the next batch starting when
   the slowest process of the batch has exited.
3. seed: the seed architectures (`--seed-models`, model=X with the seed training defaults:
   adam 1e-3, batch 64), one `train.py` process at a time, on the same data with the same
   per-trial sample budget.

W workers stand for W devices of their own (W Slurm tasks with a GPU each): every search worker
and every batch process gets `--threads` CPU threads (default 1; TensorFlow's intra- and
inter-op pools, Numba, OpenMP), W = 2 on this 2-core machine. With TensorFlow's default (all
cores in every process) a batch's slowest trial speeds up once the others have ended, which
hides the barrier's cost on a CPU box and is not what happens with one device per worker.

What is counted, identically for async and batch:

- busy seconds of a trial: its training, `training_time_s` in its final_results.json: Keras'
  fit over the trial's whole budget (every epoch with its validation pass), the same work in
  both runs. `wall_time_s` (all of bionn.train.run) is reported too (`*_run_s`) but is not the
  busy measure: a fresh `train.py` imports TensorFlow inside run(), a search worker before it;
- makespan: the workers' wall-clock window. Batch: from just before the first batch's
  processes start to the exit of the last batch's slowest. Async: from the moment the
  launcher starts the worker processes (its log line "sweep output dir", after the sweeper's
  one-off check of the search space) to the last worker's end (its worker.json `stopped`,
  before the closing report). So both include every worker process's start-up and exclude
  what has no counterpart in the batch run (the sweeper's checks and the search report, a
  few seconds each, reported as `async_command_s`: the whole `train.py -m` command);
- idle worker-seconds = W * makespan - the sum of the trials' busy seconds. Idle therefore
  holds every process start-up (Python, TensorFlow and Hydra imports and composition: once
  per worker for async, once per trial for batch), each trial's set-up and close (config,
  data statistics, model build, evaluation of every split, saving), the search's bookkeeping
  (claiming trials, the study journal, the report) and every worker waiting (for a batch's
  slowest trial; for async, only at the very end). idle fraction = idle / (W * makespan).
  Split as `*_idle_in_runs_s` (sum of run_s - busy_s: inside bionn.train.run, outside fit) and
  `*_idle_outside_runs_s` (W * makespan - sum of run_s: start-ups, bookkeeping, waiting).

search_best_r2_mean: the test `r2_mean` (final_results.json) of the async study's best trial by
its objective (validation r2_mean); seed_best_r2_mean: the best test `r2_mean` of the seed
models (the best on test, which favours the seed side). Prints one JSON line last; without
--json also a human-readable summary before it.

Budget (`--budget-s`, recorded with the wall time, `within_budget`): 15 min with the defaults
on this 2-core machine (measured 11.9 min, BENCHMARKS.md "Search"). P2 is not among the default
seed models: at about 32 samples/s its 96,000 samples alone would take about 50 min.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEED_MODELS = ("A", "E", "P")
TRIALS = 8
WORKERS = 2
TRAIN_SAMPLES = 24_000
EPOCHS = 4
VAL_SAMPLES = 2_000
TEST_SAMPLES = 2_000
THREADS = 1
BUDGET_S = 900


def data_overrides(args, cache: Path) -> list[str]:
    """The data and per-trial budget every run of the benchmark trains with."""
    total = args.train_samples + args.val_samples + args.test_samples
    train, val = args.train_samples / total, args.val_samples / total
    return [
        "dataset.shape.fresh_train_each_epoch=true",
        f"dataset.shape.n_samples={total}",
        f"dataset.shape.splits=[{train!r},{val!r},{1 - train - val!r}]",
        f"training.epochs={args.epochs}",
        f"training.use_stats_of={args.train_samples}",
        "training.save_interval=0",
        "training.early_stopping_patience=0",
        "training.verbose=0",
        f"runtime.stats_cache_dir={cache}",
    ]


def train_py(overrides: list[str], log: Path, threads: int = 0) -> subprocess.Popen:
    """Start `train.py overrides`, its output into `log`; threads > 0 caps TensorFlow's and Numba's."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    if threads > 0:
        for name in (
            "TF_NUM_INTRAOP_THREADS",
            "TF_NUM_INTEROP_THREADS",
            "NUMBA_NUM_THREADS",
            "OMP_NUM_THREADS",
        ):
            env[name] = str(threads)
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, str(ROOT / "train.py"), *overrides],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def wait_ok(process: subprocess.Popen, log: Path) -> None:
    if process.wait() != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{' '.join(map(str, process.args))} exited {process.returncode}:\n{tail}")


def final(run_dir: Path) -> dict:
    result = json.loads((run_dir / "final_results.json").read_text())
    if result["status"] != "completed":
        raise RuntimeError(f"{run_dir}: {result['status']}: {result.get('error')}")
    return result


def utilisation(makespan: float, busy: list[float], run: list[float], workers: int) -> dict:
    idle = workers * makespan - sum(busy)
    return {
        "makespan_s": round(makespan, 1),
        "busy_s": round(sum(busy), 1),
        "run_s": round(sum(run), 1),
        "idle_in_runs_s": round(sum(run) - sum(busy), 1),
        "idle_outside_runs_s": round(workers * makespan - sum(run), 1),
        "idle_s": round(idle, 1),
        "idle_fraction": round(idle / (workers * makespan), 4),
    }


def run_async(args, work: Path, data: list[str]) -> dict:
    from optuna.trial import TrialState

    from bionn.run_folder import read_json
    from bionn.search.folder import OVERRIDES, SearchFolder

    sweep = work / "async"
    overrides = [
        "-m",
        "hparams_search=TR",
        "hydra/launcher=local",
        f"hydra.sweep.dir={sweep}",
        f"hydra.sweeper.n_trials={args.trials}",
        f"hydra.sweeper.n_workers={args.workers}",
        "hydra.sweeper.pruner.name=none",
        *data,
    ]
    log = work / "async.log"
    start = time.time()
    wait_ok(train_py(overrides, log, args.threads), log)
    command = time.time() - start
    ended = max(read_json(path)["heartbeat_unix"] for path in (sweep / "workers").glob("*/worker.json"))
    makespan = ended - launched_at(log)
    trials = sorted(SearchFolder(sweep).trials(), key=lambda t: t.number)
    if len(trials) != args.trials or any(t.state != TrialState.COMPLETE for t in trials):
        states = {t.number: t.state.name for t in trials}
        raise RuntimeError(f"{sweep}: expected {args.trials} completed trials, got {states}")
    rows = []
    for t in trials:
        result = final(sweep / "trials" / str(t.number))
        rows.append(
            {
                "number": t.number,
                "params": t.params,
                "overrides": t.user_attrs[OVERRIDES],
                "val_r2_mean": round(t.value, 4),
                "test_r2_mean": round(result["evaluation"]["test"]["r2_mean"], 4),
                "busy_s": result["training_time_s"],
                "run_s": result["wall_time_s"],
                "worker": t.user_attrs.get("worker"),
            }
        )
    busy, run = [r["busy_s"] for r in rows], [r["run_s"] for r in rows]
    return {"trials": rows, "command_s": round(command, 1), **utilisation(makespan, busy, run, args.workers)}


def launched_at(log: Path) -> float:
    """When the launcher started the worker processes: the time stamp of Hydra's log line."""
    for line in log.read_text().splitlines():
        if "sweep output dir" in line and line.startswith("["):
            return datetime.datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    raise RuntimeError(f"{log}: no launcher line 'sweep output dir' (did the search start?)")


def run_batch(args, work: Path, trials: list[dict]) -> dict:
    root = work / "batch"
    root.mkdir()
    busy, run, test_r2 = [], [], {}
    start = time.time()
    for first in range(0, len(trials), args.workers):
        running = []
        for trial in trials[first : first + args.workers]:
            run_dir, log = root / str(trial["number"]), root / f"{trial['number']}.log"
            overrides = [*trial["overrides"], f"hydra.run.dir={run_dir}"]
            running.append((train_py(overrides, log, args.threads), log, run_dir))
        for process, log, _ in running:  # the barrier: the next batch waits for the slowest
            wait_ok(process, log)
        for _, _, run_dir in running:
            result = final(run_dir)
            busy.append(result["training_time_s"])
            run.append(result["wall_time_s"])
            test_r2[int(run_dir.name)] = round(result["evaluation"]["test"]["r2_mean"], 4)
    makespan = time.time() - start
    return {
        "busy_per_trial_s": busy,
        "test_r2_mean": test_r2,
        **utilisation(makespan, busy, run, args.workers),
    }


def run_seeds(args, work: Path, data: list[str]) -> dict:
    out = {}
    for arch in args.seed_models:
        run_dir, log = work / "seed" / arch, work / f"seed-{arch}.log"
        run_dir.parent.mkdir(exist_ok=True)
        overrides = [f"model={arch}", "dataset=dmedium", *data, f"hydra.run.dir={run_dir}"]
        wait_ok(train_py(overrides, log), log)
        result = final(run_dir)
        out[arch] = {
            "test_r2_mean": round(result["evaluation"]["test"]["r2_mean"], 4),
            "val_r2_mean": round(result["evaluation"]["validation"]["r2_mean"], 4),
            "fit_s": result["training_time_s"],
        }
        say(
            args, f"seed {arch}: test r2_mean {out[arch]['test_r2_mean']} ({out[arch]['fit_s']:.0f} s in fit)"
        )
    return out


def say(args, line: str) -> None:
    if not args.json:
        print(line, flush=True)


def main() -> None:
    from bionn.machine import cpu_model

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    parser.add_argument("--trials", type=int, default=TRIALS)
    parser.add_argument("--workers", type=int, default=WORKERS)
    parser.add_argument("--train-samples", type=int, default=TRAIN_SAMPLES, help="per epoch, fresh")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--val-samples", type=int, default=VAL_SAMPLES)
    parser.add_argument("--test-samples", type=int, default=TEST_SAMPLES)
    parser.add_argument("--seed-models", default=",".join(SEED_MODELS), help="comma-separated; '' skips")
    parser.add_argument(
        "--threads",
        type=int,
        default=THREADS,
        help="CPU threads of each search worker and batch process (0: TensorFlow's default, all cores)",
    )
    parser.add_argument("--budget-s", type=float, default=BUDGET_S, help="the stated wall-time budget")
    parser.add_argument("--workdir", type=Path, help="keep the run folders here (default: a temporary one)")
    args = parser.parse_args()
    args.seed_models = [m for m in args.seed_models.split(",") if m]

    started, load_start = time.time(), os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_search-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        data = data_overrides(args, work / "stats-cache")
        search = run_async(args, work, data)
        say(args, f"async: {search['idle_fraction']:.1%} idle of {args.workers} x {search['makespan_s']} s")
        batch = run_batch(args, work, search["trials"])
        say(args, f"batch: {batch['idle_fraction']:.1%} idle of {args.workers} x {batch['makespan_s']} s")
        seeds = run_seeds(args, work, data)
    best = max(search["trials"], key=lambda t: t["val_r2_mean"])
    seed_best = max(seeds, key=lambda m: seeds[m]["test_r2_mean"]) if seeds else None
    result = {
        "workers": args.workers,
        "threads_per_worker": args.threads,
        "trials": args.trials,
        "per_trial_budget": {
            "train_samples_per_epoch": args.train_samples,
            "epochs": args.epochs,
            "train_samples": args.train_samples * args.epochs,
            "val_samples": args.val_samples,
            "test_samples": args.test_samples,
        },
        "async_idle_fraction": search["idle_fraction"],
        "batch_idle_fraction": batch["idle_fraction"],
        "async_idle_s": search["idle_s"],
        "batch_idle_s": batch["idle_s"],
        "async_busy_s": search["busy_s"],
        "batch_busy_s": batch["busy_s"],
        "async_run_s": search["run_s"],
        "batch_run_s": batch["run_s"],
        "async_idle_in_runs_s": search["idle_in_runs_s"],
        "batch_idle_in_runs_s": batch["idle_in_runs_s"],
        "async_idle_outside_runs_s": search["idle_outside_runs_s"],
        "batch_idle_outside_runs_s": batch["idle_outside_runs_s"],
        "async_makespan_s": search["makespan_s"],
        "async_command_s": search["command_s"],
        "batch_makespan_s": batch["makespan_s"],
        "idle_ratio_async_to_batch": round(search["idle_s"] / batch["idle_s"], 3)
        if batch["idle_s"]
        else None,
        "search_best_trial": best["number"],
        "search_best_params": best["params"],
        "search_best_r2_mean": best["test_r2_mean"],
        "search_best_r2_mean_batch_rerun": batch["test_r2_mean"][best["number"]],
        "seed_best_model": seed_best,
        "seed_best_r2_mean": seeds[seed_best]["test_r2_mean"] if seeds else None,
        "seed_models": seeds,
        "search_trials": [{k: v for k, v in t.items() if k != "overrides"} for t in search["trials"]],
        "batch_busy_per_trial_s": batch["busy_per_trial_s"],
        "budget_s": args.budget_s,
        "wall_time_s": round(time.time() - started, 1),
        "load_average_start_end": [round(load_start[0], 2), round(os.getloadavg()[0], 2)],
        "machine": f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    }
    result["within_budget"] = result["wall_time_s"] <= args.budget_s
    say(
        args,
        f"search best (trial {best['number']}) test r2_mean {best['test_r2_mean']} against seed best "
        f"({seed_best}) {result['seed_best_r2_mean']}; wall {result['wall_time_s']} s of {args.budget_s} s",
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
