"""The MLflow logger's cost: its time per epoch against an epoch, and many jobs writing one SQLite store.

    .venv/bin/python scripts/bench_tracking.py --json
    .venv/bin/python scripts/bench_tracking.py --json --tracking-uri http://127.0.0.1:5000   # a server

1. A real training (model P, debug=quick, logger=none) gives the epoch time (median over its epochs).
   Then bionn.tracking.MlflowTracker is opened on that run folder and logs `--log-epochs` epochs of
   that run's metrics (the keys of its history.csv rows) as log_epoch does at each commit: the
   tracker's time per epoch is the median of those calls; the ratio is tracker / epoch.
2. `--processes` processes (as many Slurm jobs of one sweep starting together) each create a run in
   one SQLite store (the default store of a sweep folder) and log `--epochs` epochs at once, with no
   pause between them (far denser than real epochs): the wall time, the calls' median, 95th percentile
   and maximum, and how many calls failed (SQLite's "database is locked" after its 5 s busy wait).

Prints one JSON line; BENCHMARKS.md records the figures.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def epoch_and_tracker_time(workdir: Path, epochs: int, log_epochs: int, tracking_uri: str | None) -> dict:
    import keras

    from bionn.config.compose import compose_run
    from bionn.run_folder import RunFolder
    from bionn.tracking import MlflowTracker
    from bionn.train import run

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self._start)

    cfg = compose_run(
        "model=P",
        "debug=quick",
        f"training.epochs={epochs}",
        "training.verbose=silent",
        "training.save_interval=0",
        "training.early_stopping_patience=0",
        "logger=none",
        f"runtime.stats_cache_dir={workdir / 'cache'}",
        conf=ROOT / "conf",
    )
    timer = EpochTimer()
    folder = RunFolder(workdir / "run")
    run(cfg, folder.path, callbacks=[timer])
    row = {k: v for k, v in folder.history_rows()[-1].items() if k != "epoch"}
    settings = SimpleNamespace(
        tracking_uri=tracking_uri, experiment_name="bench", log_model=False, required=False, timeout_s=10.0
    )
    tracker = MlflowTracker(folder, settings)
    started = time.perf_counter()
    tracker.open()
    open_s = time.perf_counter() - started
    calls = []
    for step in range(epochs, epochs + log_epochs):
        started = time.perf_counter()
        tracker.log_epoch(step, row)
        calls.append(time.perf_counter() - started)
    assert not tracker.off, "the store did not answer"
    epoch_s = statistics.median(timer.seconds[1:] or timer.seconds)  # the first epoch traces the graph
    tracker_s = statistics.median(calls)
    return {
        "store": tracker.store.uri.split("://")[0],
        "epoch_s": round(epoch_s, 3),
        "metrics_per_epoch": len(row),
        "tracker_s_per_epoch": round(tracker_s, 4),
        "tracker_s_per_epoch_max": round(max(calls), 4),
        "ratio_to_epoch": round(tracker_s / epoch_s, 4),
        "open_s": round(open_s, 3),
    }


def _job(uri: str, experiment: str, epochs: int, metrics: int, out) -> None:
    """One job of a sweep: a run in the shared store, `epochs` log_batch calls of `metrics` metrics."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    calls, failed = [], 0
    started = time.perf_counter()
    try:
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    except Exception:  # another job created it meanwhile
        experiment_id = client.get_experiment_by_name(experiment).experiment_id
    run_id = client.create_run(experiment_id).info.run_id
    for step in range(epochs):
        now = int(time.time() * 1000)
        batch = [Metric(f"m{i}", float(step + i), now, step) for i in range(metrics)]
        t = time.perf_counter()
        try:
            client.log_batch(run_id, metrics=batch)
        except Exception:
            failed += 1
        calls.append(time.perf_counter() - t)
    out.put({"calls": calls, "failed": failed, "wall_s": time.perf_counter() - started})


def concurrent_sqlite(workdir: Path, processes: int, epochs: int, metrics: int) -> dict:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{workdir / 'shared' / 'mlflow.db'}"
    (workdir / "shared").mkdir()
    MlflowClient(tracking_uri=uri).search_experiments()  # the tables, created once (bionn locks this step)
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    jobs = [context.Process(target=_job, args=(uri, "sweep", epochs, metrics, out)) for _ in range(processes)]
    started = time.perf_counter()
    for job in jobs:
        job.start()
    results = [out.get(timeout=1800) for _ in jobs]
    for job in jobs:
        job.join()
    wall = time.perf_counter() - started
    calls = sorted(c for r in results for c in r["calls"])
    logged = MlflowClient(tracking_uri=uri).search_runs(
        [MlflowClient(tracking_uri=uri).get_experiment_by_name("sweep").experiment_id], max_results=1000
    )
    return {
        "processes": processes,
        "epochs_each": epochs,
        "metrics_per_epoch": metrics,
        "wall_s": round(wall, 2),
        "call_s_median": round(statistics.median(calls), 4),
        "call_s_p95": round(calls[int(0.95 * (len(calls) - 1))], 4),
        "call_s_max": round(calls[-1], 4),
        "failed_calls": sum(r["failed"] for r in results),
        "runs_in_store": len(logged),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the real training (part 1)")
    parser.add_argument("--log-epochs", type=int, default=20, help="log_epoch calls timed (part 1)")
    parser.add_argument(
        "--tracking-uri", default=None, help="part 1's store (default: SQLite in the run folder)"
    )
    parser.add_argument("--processes", default="4,8", help="comma-separated process counts (part 2)")
    parser.add_argument("--concurrent-epochs", type=int, default=30, help="epochs each process logs (part 2)")
    parser.add_argument("--metrics", type=int, default=14, help="metrics per epoch (part 2; model P logs 14)")
    args = parser.parse_args()
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        result["per_epoch"] = epoch_and_tracker_time(
            Path(tmp), args.epochs, args.log_epochs, args.tracking_uri
        )
    result["concurrent_sqlite"] = []
    for n in (int(p) for p in args.processes.split(",") if p):
        with tempfile.TemporaryDirectory() as tmp:
            result["concurrent_sqlite"].append(
                concurrent_sqlite(Path(tmp), n, args.concurrent_epochs, args.metrics)
            )
    if args.json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
