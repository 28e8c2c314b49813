"""Signals at random moments of real trainings, under glibc's and Python's heap checks: python
scripts/stress_signals.py [--runs N] [--minutes M] --json

Issue 21 item 9: `free(): invalid next size` once aborted a USR2-preempted attempt during submitit's
requeue. This script looks for such crashes where they would show. Every run is a real `train.py`
(model E, debug=quick, several epochs) with MALLOC_CHECK_=3 (glibc aborts at the first heap
inconsistency it sees), a random MALLOC_PERTURB_ (freed and fresh memory filled with a byte, so a
read of freed memory gives garbage instead of the old values) and, every other run,
PYTHONMALLOC=debug (guard bytes around every Python allocation, checked when it is freed). After a
random delay between 0 and the length of an uninterrupted run (so it lands anywhere: start-up,
statistics, an epoch, the evaluation, the exit), it gets one of SIGUSR2, SIGTERM, SIGINT, or
SIGUSR2 then SIGTERM 0.5 s later (a Slurm preemption). Two ways to run:

- direct: `train.py hydra.run.dir=D`; it must end with 128 + the signal, its attempt recorded as
  interrupted by the first signal; or, if the signal came before bionn's handler or after the run's
  end, the record must say so (no attempt of its own, or its attempt completed). Every
  --resume-every-th such run is run again, unsignalled, to completion;
- submitit: `train.py -m hydra/launcher=local hydra.sweep.dir=D` (every --submitit-every-th run),
  the signal sent to submitit's task process: SIGUSR2 goes through submitit's own handler
  (checkpoint, then requeue: the local controller starts the task again, which resumes the run).

Every run that ends completed must end bit-equal to an uninterrupted reference run (the same
evaluation, to the last bit), its attempts closed truthfully: each one interrupted by the signal
sent, the last completed. A crash is an exit by SIGABRT/SIGSEGV/SIGBUS/SIGILL/SIGFPE (or 134/139)
or a heap or fatal-error message in any log; a hang is a run alive --timeout seconds after its
signal. The last line printed is one JSON object: counts per outcome, signal and mode, and each
finding with its log. Figures and findings: docs/testing.md ("Signals under heap checks").
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bionn.io import atomic_write_json  # noqa: E402
from bionn.run_folder import RunFolder  # noqa: E402

TRAINING = [
    "model=E",
    "debug=quick",
    "training.epochs=4",
    "training.save_interval=0",
    "training.early_stopping_patience=0",
    "training.verbose=2",
]
SIGNALS = {
    "SIGUSR2": [signal.SIGUSR2],
    "SIGTERM": [signal.SIGTERM],
    "SIGINT": [signal.SIGINT],
    "SIGUSR2+SIGTERM": [signal.SIGUSR2, signal.SIGTERM],
}
CRASH_CODES = {-s for s in (signal.SIGABRT, signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE)}
CRASH_CODES |= {128 + signal.SIGABRT, 128 + signal.SIGSEGV}
CRASH_TEXT = re.compile(
    r"free\(\)|malloc|double free|corrupted|munmap_chunk|Fatal Python error|Segmentation fault"
    r"|Aborted|core dumped|Debug memory block|bad ID: Allocated using API",
)


def heap_checks(rng: random.Random, python_debug: bool) -> dict[str, str]:
    env = dict(
        os.environ, MALLOC_CHECK_="3", MALLOC_PERTURB_=str(rng.randint(1, 255)), PYTHONFAULTHANDLER="1"
    )
    if python_debug:
        env["PYTHONMALLOC"] = "debug"
    return env


def train_command(folder_key: str, folder: Path, cache: Path, submitit: bool) -> list[str]:
    launcher = ["-m", "hydra/launcher=local"] if submitit else []
    return [sys.executable, str(ROOT / "train.py"), *launcher, *TRAINING,
            f"{folder_key}={folder}", f"runtime.stats_cache_dir={cache}"]  # fmt: skip


def start(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)


def submitit_task(launcher: int) -> int | None:
    """The pid of submitit's task process (python -m submitit.core._submit) under `launcher`."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    todo = list(children.get(launcher, []))
    while todo:
        pid = todo.pop()
        try:
            if b"submitit.core._submit" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        except OSError:
            continue
        todo.extend(children.get(pid, []))
    return None


def crash_lines(logs: list[Path]) -> list[str]:
    found = []
    for log in logs:
        if log.is_file():
            text = log.read_text(errors="replace")
            found += [f"{log.name}: {line.strip()}" for line in text.splitlines() if CRASH_TEXT.search(line)]
    return found


def completed_truthfully(folder: RunFolder, sent: list[str], reference: dict) -> list[str]:
    """What is wrong with a run that should have ended completed after interruptions by `sent`."""
    problems = []
    final = folder.final()
    if final is None or final.get("status") != "completed":
        return [f"final status {final and final.get('status')}, not completed"]
    if final["evaluation"] != reference:
        problems.append("evaluation differs from the uninterrupted run's")
    attempts = folder.attempts()
    if not attempts or attempts[-1]["outcome"] != "completed":
        problems.append(f"last attempt {attempts[-1:]}, not completed")
    for attempt in attempts[:-1]:
        reason = attempt.get("reason") or ""
        if attempt["outcome"] != "interrupted" or not any(s in reason for s in sent):
            problems.append(f"attempt {attempt['number']}: {attempt['outcome']} ({reason}), sent {sent}")
    return problems


def wait(proc: subprocess.Popen, timeout: float) -> int | None:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None


@dataclass
class Stress:
    args: argparse.Namespace
    rng: random.Random
    work: Path  # run folders and logs
    cache: Path  # the statistics cache all runs share
    window: float  # seconds the last uninterrupted run took: signals land in [0, window) after its start
    reference: dict  # its final evaluation


def one_run(n: int, mode_count: int, submitit: bool, stress: Stress) -> dict:
    """Start training n, signal it at a random moment, check how it ended; its record and findings."""
    args, work, cache = stress.args, stress.work, stress.cache
    kinds = ["SIGUSR2", "SIGUSR2+SIGTERM"] if submitit else list(SIGNALS)
    kind = kinds[mode_count % len(kinds)]
    python_debug = n % 2 == 1
    env = heap_checks(stress.rng, python_debug)
    folder_path = work / f"run{n}"
    cmd = train_command("hydra.sweep.dir" if submitit else "hydra.run.dir", folder_path, cache, submitit)
    log = work / f"run{n}.log"
    record = {"run": n, "mode": "submitit" if submitit else "direct", "signal": kind,
              "malloc_perturb": int(env["MALLOC_PERTURB_"]), "pythonmalloc_debug": python_debug}  # fmt: skip
    delay = stress.rng.uniform(0, 0.9 * stress.window)  # the length varies with the load: mostly inside
    proc = start(cmd, log, env)
    target, began = proc.pid, time.monotonic()
    if submitit:  # the delay counts from the task's start, like a preemption of a running job
        while (target := submitit_task(proc.pid)) is None and proc.poll() is None:
            time.sleep(0.05)
        began = time.monotonic()
    while proc.poll() is None and time.monotonic() - began < delay:  # an early end is seen at once
        time.sleep(0.05)
    record["delay_s"] = round(delay, 2)
    sent = []
    for number, sig in enumerate(SIGNALS[kind]):
        if number:
            time.sleep(0.5)
        if proc.poll() is None and target is not None:
            try:
                os.kill(target, sig)
                sent.append(sig.name)
            except ProcessLookupError:
                break
    record["sent"] = sent
    code = record["exit_code"] = wait(proc, args.timeout)
    record["run_s"] = round(time.monotonic() - began, 1)
    folder = RunFolder(folder_path / "0" if submitit else folder_path)
    logs = [log, *folder_path.glob(".submitit/*/*.err"), *folder_path.glob(".submitit/*/*.out")]
    findings = [f"crash: {line}" for line in crash_lines(logs)]
    own = next((a for a in folder.attempts() if a["pid"] == proc.pid), None) if not submitit else None
    signalled = {128 + signal.Signals[s] for s in sent} | {-signal.Signals[s] for s in sent}
    if "SIGINT" in sent:
        signalled.add(1)  # KeyboardInterrupt through Hydra's error report
    if code is None:
        findings.append(f"hang: alive {args.timeout:.0f} s after {sent}")
    elif code in CRASH_CODES:
        findings.append(f"crash: exit code {code}")
    elif submitit:
        record["outcome"] = "completed"
        if code != 0:
            findings.append(f"the sweep ended with {code}")
        findings += completed_truthfully(folder, sent, stress.reference)
    elif code == 0:  # the run ended before the signal (or while it was sent)
        record["outcome"] = "ended before the signal"
        findings += completed_truthfully(folder, sent, stress.reference)
    elif code in signalled and own is None and code not in {128 + signal.Signals[s] for s in sent}:
        record["outcome"] = "before bionn's handler"
    elif code in signalled and own is not None and own["outcome"] == "completed":
        record["outcome"] = "after the run's end"
    elif code in signalled and own is not None and own["reason"] == f"interrupted by {sent[0]}":
        record["outcome"] = "interrupted"
    else:
        findings.append(f"record: exit code {code} after {sent}, this attempt: {own}")
    if (
        record.get("outcome") in ("interrupted", "before bionn's handler")
        and mode_count % args.resume_every == 0
    ):
        resume_log = work / f"run{n}.resume.log"
        again = start(train_command("hydra.run.dir", folder_path, cache, False), resume_log, env)
        resumed = record["resumed_exit_code"] = wait(again, args.timeout)
        findings += [f"crash on resume: {line}" for line in crash_lines([resume_log])]
        if resumed != 0:
            findings.append(f"resume ended with {resumed}")
        else:
            record["outcome"] += ", resumed to completion"
            findings += completed_truthfully(folder, sent, stress.reference)
    record["findings"] = findings
    return record


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=40, help="signalled trainings at most")
    parser.add_argument("--minutes", type=float, default=15.0, help="start no run after this many minutes")
    parser.add_argument("--resume-every", type=int, default=3, help="resume every n-th direct run to the end")
    parser.add_argument("--submitit-every", type=int, default=4, help="every n-th run via submitit (0: none)")
    parser.add_argument(
        "--timeout", type=float, default=900.0, help="seconds a signalled run may take to end"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--keep", type=Path, help="keep the run folders and logs here (its reference is reused)"
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args()
    # A shell's background job (`cmd &`) ignores SIGINT, and so would every training it starts; a
    # handler (unlike SIG_IGN) is reset at exec, so the trainings get SIGINT's default, as in a terminal.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="stress-signals-")) if args.keep is None else args.keep
    work.mkdir(parents=True, exist_ok=True)
    cache = work / "cache"
    began = time.monotonic()
    reference_run, measured = work / "reference", work / "reference_run_s.json"
    if measured.is_file():  # a --keep folder of an earlier call: its reference run and its length
        window = json.loads(measured.read_text())["reference_run_s"]
    else:
        done = subprocess.run(train_command("hydra.run.dir", reference_run, cache, False), cwd=ROOT,
                              capture_output=True, text=True)  # fmt: skip
        if done.returncode != 0:
            sys.exit(f"stress_signals: the uninterrupted reference run failed:\n{done.stderr[-3000:]}")
        window = time.monotonic() - began
        atomic_write_json(measured, {"reference_run_s": window})
    reference = RunFolder(reference_run).final()["evaluation"]
    stress = Stress(args, rng, work, cache, window, reference)
    records, modes = [], Counter()
    for n in range(args.runs):
        if time.monotonic() - began > args.minutes * 60:
            break
        submitit = args.submitit_every > 0 and n % args.submitit_every == args.submitit_every - 1
        mode_count = modes[submitit]
        modes[submitit] += 1
        records.append(one_run(n, mode_count, submitit, stress))
        if not records[-1]["sent"] and records[-1]["exit_code"] == 0:  # the machine got faster
            stress.window = records[-1]["run_s"]
        if not args.json:
            print(json.dumps(records[-1]), flush=True)
    findings = [f"run {r['run']} ({r['mode']}, {r['signal']}): {f}" for r in records for f in r["findings"]]
    result = {
        "runs": len(records),
        "signals_sent": sum(len(r["sent"]) for r in records),
        "by_signal": dict(Counter(r["signal"] for r in records)),
        "by_mode": dict(Counter(r["mode"] for r in records)),
        "outcomes": dict(Counter(r.get("outcome", "finding") for r in records)),
        "pythonmalloc_debug_runs": sum(r["pythonmalloc_debug"] for r in records),
        "resumed": sum("resumed_exit_code" in r for r in records),
        "crashes": sum(f.startswith("crash") for r in records for f in r["findings"]),
        "hangs": sum(f.startswith("hang") for r in records for f in r["findings"]),
        "findings": findings,
        "reference_run_s": round(window, 1),
        "wall_s": round(time.monotonic() - began, 1),
        "training": TRAINING,
        "cpu": f"{cpu_model()}, {os.cpu_count()} cores",
        "work": str(work),
    }
    if args.keep is None and not findings:
        shutil.rmtree(work, ignore_errors=True)
        result["work"] = None
    print(json.dumps(result))


if __name__ == "__main__":
    main()
