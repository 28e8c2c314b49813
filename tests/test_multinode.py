"""Training across two hosts: the two-node local Slurm cluster (scripts/local_slurm/start.sh with
SLURM_LOCAL_NODES=2, as scripts/test.sh starts it).

Node 2 is its own network and UTS namespace (hostname bionn-node2, address 127.0.2.2), so the two
workers of a `hydra.launcher.nodes=2` job run on different hosts: different hostnames, addresses and
gRPC between them. The cluster is found or skipped as in tests/test_slurm.py; with fewer than two
usable nodes these tests skip (fail under BIONN_REQUIRE_SLURM=1). docs/slurm.md says what each proves.
"""

from __future__ import annotations

import datetime
import os
import re
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import ROOT, training_in_attempt
from test_search_slurm import SMOKE, assert_trials_match_their_run_folders, search, states
from test_slurm import (  # noqa: F401  (fixtures)
    LONG,
    PREEMPT,
    assert_resumed_attempts,
    assert_weights_equal,
    epochs_in,
    job_logs,
    read,
    slurm,
    sweep,
    sweep_command,
)

from bionn.report.read import collect, watch_states
from bionn.run_folder import RunFolder, RunFolderError, Status
from bionn.search.folder import SearchFolder
from bionn.slurm import attempt_job_id, queue_states

pytestmark = pytest.mark.slow

TWO_NODES = ["hydra.launcher.nodes=2", "hydra.launcher.tasks_per_node=1", "hydra.launcher.gpus_per_node=0"]


def hostnames(nodelist: str) -> list[str]:
    """Slurm's compressed node list (e.g. `bionn-node2,vm`) as host names, by Slurm itself."""
    out = subprocess.run(
        ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True
    )
    return out.stdout.split()


@pytest.fixture(scope="session")
def two_nodes(slurm) -> list[str]:  # noqa: F811
    """The cluster's usable nodes, at least two (skip, or fail under BIONN_REQUIRE_SLURM=1, otherwise)."""
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], capture_output=True, text=True).stdout
    nodes = sorted(
        {
            n
            for n, state in (line.split() for line in out.splitlines())
            if state in ("idle", "mixed", "allocated")
        }
    )
    if len(nodes) < 2:
        message = (
            f"the cluster has {len(nodes)} usable node(s) ({out.strip()}); start two with SLURM_LOCAL_NODES=2"
        )
        if os.environ.get("BIONN_REQUIRE_SLURM") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return nodes


def wait_for(launcher: subprocess.Popen, until, what: str, log: Path, timeout: float = 900) -> None:
    """Wait for a state (`until()` true) while the launcher runs; fail naming `what` otherwise."""
    deadline = time.time() + timeout
    while not until():
        assert launcher.poll() is None, f"the launcher ended before {what}:\n{log.read_text()[-3000:]}"
        assert time.time() < deadline, f"no {what} within {timeout} s:\n{log.read_text()[-3000:]}"
        time.sleep(0.2)


def worker_logs_on_both_hosts(out: Path, hosts: list[str]) -> tuple[dict[int, str], dict[int, list[str]]]:
    """The logs of a two-node sweep job's tasks 0 and 1 (every start, oldest first), after asserting that
    the two ran on `hosts`; and the weights digests each worker logged (`hydra.verbose=bionn.train`)."""
    logs = {}
    for task in (0, 1):
        paths = sorted(job_logs(out, task), key=lambda p: p.stat().st_mtime)
        logs[task] = "".join(p.read_text() for p in paths)
    workers_hosts = {
        t: re.search(r"JobEnvironment\(job_id=\S+, hostname=([^,]+),", text).group(1)
        for t, text in logs.items()
    }
    assert sorted(workers_hosts.values()) == sorted(hosts), workers_hosts
    digests = {
        t: re.findall(rf"worker {t}/2 weights sha256 ([0-9a-f]{{64}})", text) for t, text in logs.items()
    }
    return logs, digests


def last_outcome(run: Path) -> str | None:
    try:
        attempts = RunFolder(run).attempts()
    except (RunFolderError, OSError):  # a file being replaced: ask again
        return None
    return attempts[-1]["outcome"] if attempts else None


@pytest.mark.full  # a quick two-node job checks multi-host training per commit (below)
def test_two_node_job_preempted_then_losing_a_host_says_so_resumes_both_hosts_and_ends_bit_equal(
    slurm,  # noqa: F811
    two_nodes,
    cache,  # noqa: F811
    one_process_two_replicas,  # noqa: F811
    tmp_path,
):
    [extra, *_] = [n for n in two_nodes if n.startswith("bionn-node")]
    out = tmp_path / "sweep"
    run = out / "0"
    log = tmp_path / "launcher.log"
    debug = "hydra.verbose=bionn.train"  # each worker logs its weights' digest at DEBUG
    cmd = sweep_command(*slurm, *TWO_NODES, debug, "model=P", *LONG, sweep=out, cache=cache)

    def sigint_as_at_a_terminal() -> None:  # a suite started in the background inherits an ignored SIGINT
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    with open(log, "w") as handle:
        launcher = subprocess.Popen(
            cmd, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, preexec_fn=sigint_as_at_a_terminal
        )
    try:
        # Attempt 1 preempted (USR2: submitit requeues the job), attempt 2 loses its chief's host.
        wait_for(launcher, lambda: training_in_attempt(run, 1), "attempt 1 training", log)
        subprocess.run(
            [*PREEMPT, read(run / "info.json")["slurm"]["job_id"]], check=True, capture_output=True
        )
        wait_for(launcher, lambda: training_in_attempt(run, 2), "attempt 2 training", log)
        node_script("lose", extra)
        lost_at = RunFolder(run).committed_epoch()
        # Slurm requeues the job, which waits for two nodes: meanwhile its run folder says interrupted,
        # naming the lost host (the waiting launcher closed the attempt no process of the job can close).
        wait_for(launcher, lambda: last_outcome(run) == "interrupted", "record of the lost attempt", log)
        assert RunFolder(run).status() == Status.INTERRUPTED
        lost = RunFolder(run).attempts()[1]
        assert lost["reason"].startswith(f"lost node {extra} (Slurm: "), lost
        job = attempt_job_id(lost["slurm"])
        [watched] = watch_states(out, queue_states())
        assert watched.state == "requeued" and f"lost node {extra}" in watched.detail, watched
        # The user stops waiting (Ctrl-C to the launcher, scancel): the sweep ends saying what happened.
        launcher.send_signal(signal.SIGINT)
        assert launcher.wait(timeout=120) == 130, log.read_text()[-3000:]
        subprocess.run(["scancel", job], check=True, capture_output=True)
        deadline = time.time() + 120
        while job_state(job) not in ("", "CANCELLED"):
            assert time.time() < deadline, f"the job {job} was not cancelled"
            time.sleep(0.2)
        [summary] = collect(out)
        assert (summary.status, summary.interruption) == ("interrupted", lost["reason"]), summary
        [watched] = watch_states(out, queue_states())
        assert watched.state == "cancelled" and watched.detail == lost["reason"], watched
        node_script("restore", extra)
    finally:
        if launcher.poll() is None:
            launcher.kill()
        node_script("restore", extra)
    assert f"Slurm requeued it; its attempt 2 ended: lost node {extra}" in log.read_text()
    # Once the host is back, `bionn-sweep resume` continues the job at its last committed epoch.
    resumed_sweep = subprocess.run(
        [sys.executable, "-m", "bionn.sweep", "resume", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert resumed_sweep.returncode == 0, resumed_sweep.stdout[-2000:] + resumed_sweep.stderr[-3000:]

    # One writer: one record per start, each epoch once; every attempt recorded by the chief's host.
    first, second, third = RunFolder(run).attempts()
    assert [a["outcome"] for a in (first, second, third)] == ["interrupted", "interrupted", "completed"]
    assert first["reason"] == "interrupted by SIGUSR2", first
    assert first["start_epoch"] == 0 < second["start_epoch"] < third["start_epoch"] == lost_at, (
        first,
        second,
        third,
    )
    assert epochs_in(run / "history.csv") == list(range(6))
    final = read(run / "final_results.json")
    assert (final["status"], final["epochs_completed"]) == ("completed", 6)
    assert [a["slurm"]["restart_count"] for a in (first, second, third)] == [0, 1, 0]  # a new job
    info = read(run / "info.json")
    assert info["workers"] == 2 and info["replicas"] == 2 and info["slurm"]["ntasks"] == 2
    hosts = hostnames(info["slurm"]["nodelist"])
    assert len(set(hosts)) == 2 and set(hosts) <= set(two_nodes), hosts  # the run folder names both hosts
    assert first["host"] == second["host"] == third["host"] == hosts[0] == extra  # task 0, the chief

    # Each host's worker resumed at the epoch the chief committed, each time (the logs of both jobs).
    logs, digests = worker_logs_on_both_hosts(out, hosts)
    resumed = {t: re.findall(r"resuming \S+ at epoch (\d+)", text) for t, text in logs.items()}
    starts = [str(second["start_epoch"] + 1), str(third["start_epoch"] + 1)]
    assert resumed[0] == resumed[1] == starts, (resumed, starts)
    assert digests[0] and digests[0][-1] == digests[1][-1], digests

    # The two hosts' batch slices make the same steps as one process with 2 replicas.
    assert_weights_equal(run, one_process_two_replicas)


def test_a_two_node_job_trains_one_worker_per_host_and_both_end_with_the_same_weights(
    slurm,  # noqa: F811
    two_nodes,
    cache,  # noqa: F811
    tmp_path,
):
    """The per-commit check of multi-host training (the preempted-then-lost test above is the full tier's):
    two epochs of a `nodes=2` job, one worker per host, whose two workers end with bit-equal weights."""
    out = tmp_path / "sweep"
    debug = "hydra.verbose=bionn.train"  # each worker logs its weights' digest at DEBUG
    done = sweep(
        *slurm, *TWO_NODES, debug, "model=P", "debug=quick", "training.epochs=2", sweep=out, cache=cache
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    run = out / "0"
    final = read(run / "final_results.json")
    assert (final["status"], final["epochs_completed"]) == ("completed", 2), final
    info = read(run / "info.json")
    assert info["workers"] == 2 and info["replicas"] == 2 and info["slurm"]["ntasks"] == 2
    hosts = hostnames(info["slurm"]["nodelist"])
    assert len(set(hosts)) == 2 and set(hosts) <= set(two_nodes), hosts
    _, digests = worker_logs_on_both_hosts(out, hosts)
    assert len(digests[0]) == len(digests[1]) == 1 and digests[0] == digests[1], digests


def job_state(job: str) -> str:
    return subprocess.run(
        ["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True
    ).stdout.strip()


@contextmanager
def node_held(node: str, cpus: int | None = None):
    """A job holding `cpus` CPUs of `node` (all of it: None) while the block runs: jobs fill node 1 first
    (it has the lower Weight), so holding it sends the next job, or worker, to the extra node."""
    size = ["--exclusive"] if cpus is None else [f"--cpus-per-task={cpus}"]
    sbatch = ["sbatch", "--parsable", "-w", node, *size, "-o", "/dev/null", "--wrap", "sleep 3600"]
    job = subprocess.run(sbatch, capture_output=True, text=True, check=True).stdout.strip()
    try:
        deadline = time.time() + 900
        while job_state(job) != "RUNNING":
            assert time.time() < deadline, f"the job {job} holding {node} did not start"
            time.sleep(0.2)
        yield job
    finally:
        subprocess.run(["scancel", job], capture_output=True)


def node_script(action: str, node: str) -> None:
    """Lose (every process on it SIGKILLed, its network gone) or restore an extra node."""
    script = ROOT / "scripts" / "local_slurm" / "node.sh"
    done = subprocess.run(["bash", str(script), action, node], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_a_lost_node_s_job_is_requeued_on_the_other_node_and_resumes_at_its_committed_epoch(
    slurm,  # noqa: F811
    two_nodes,
    cache,  # noqa: F811
    tmp_path,
):
    [extra, *_] = [n for n in two_nodes if n.startswith("bionn-node")]
    [first] = [n for n in two_nodes if n == socket.gethostname()]
    out = tmp_path / "sweep"
    run = out / "0"
    launcher = None
    try:
        with node_held(first) as blocker:
            cmd = sweep_command(*slurm, "model=P", *LONG, "training.epochs=3", sweep=out, cache=cache)
            with open(tmp_path / "launcher.log", "w") as log:
                launcher = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True)
            deadline = time.time() + 900
            while launcher.poll() is None and not training_in_attempt(run, 1):
                assert time.time() < deadline, "the job did not start training"
                time.sleep(0.2)
            assert launcher.poll() is None, (tmp_path / "launcher.log").read_text()[-3000:]
            assert read(run / "info.json")["slurm"]["nodelist"] == extra
            subprocess.run(["scancel", blocker], check=True)
        node_script("lose", extra)  # mid-epoch: at least one epoch is still to train
        lost_at = RunFolder(run).committed_epoch()
        launcher.wait(timeout=900)
    finally:
        if launcher is not None and launcher.poll() is None:
            launcher.kill()
        node_script("restore", extra)
    assert launcher.returncode == 0, (tmp_path / "launcher.log").read_text()[-3000:]

    # Slurm marked the node down and requeued the job, which resumed on node 1 at the lost node's commit.
    lost, resumed = assert_resumed_attempts(run, interruptions=1, epochs=3)
    assert (lost["host"], lost["outcome"]) == (extra, "interrupted"), lost
    assert lost["reason"].startswith(f"lost node {extra} (Slurm: "), lost  # names the lost host
    assert resumed["host"] == first and resumed["start_epoch"] == lost_at >= 1, (lost_at, resumed)
    assert read(run / "info.json")["slurm"]["nodelist"] == first


def test_more_nodes_than_the_cluster_has_ends_with_slurms_refusal_and_an_odd_split_before_submission(
    slurm,  # noqa: F811
    two_nodes,
    cache,  # noqa: F811
    tmp_path,
):
    # More nodes than the cluster has: sbatch refuses (EnforcePartLimits), reported as one paragraph.
    too_many = len(two_nodes) * 2  # a multiple of 2, so the global batch of 32 splits across them
    many = [*slurm, *TWO_NODES[1:], f"hydra.launcher.nodes={too_many}", "model=P", "debug=quick"]
    done = sweep(*many, sweep=tmp_path / "many", cache=cache)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "bionn: error: Slurm refused to submit job(s) #0" in done.stderr, done.stderr[-3000:]
    assert (
        "sbatch: error: Batch job submission failed" in done.stderr and "Nothing was submitted" in done.stderr
    )

    # A batch that the nodes cannot share evenly: refused before anything is submitted, naming both.
    odd = [*slurm, *TWO_NODES, "model=P", "debug=quick", "dataset.shape.batch_size=33"]
    done = sweep(*odd, sweep=tmp_path / "odd", cache=cache)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "dataset.shape.batch_size = 33 cannot be split across hydra.launcher.nodes = 2" in done.stderr
    assert not (tmp_path / "odd" / ".submitit").exists() and not (tmp_path / "odd" / "sweep.json").exists()

    # A search trial is one task: a two-node worker is refused before any trial, saying where to read why.
    done = search(*slurm, *TWO_NODES, sweep=tmp_path / "search", cache=cache)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "nodes = 2, tasks_per_node = 1: a search worker is one task" in done.stderr
    assert "docs/search.md says why" in done.stderr and not (tmp_path / "search").exists()


@pytest.mark.full  # losing a host per commit: the lost node's job above; the takeover rule: test_search.py
def test_a_search_worker_on_a_lost_host_has_its_trial_taken_over_by_the_other_host_after_dead_after_s(
    slurm,  # noqa: F811
    two_nodes,
    cache,  # noqa: F811
    tmp_path,
):
    [extra, *_] = [n for n in two_nodes if n.startswith("bionn-node")]
    [first] = [n for n in two_nodes if n == socket.gethostname()]
    out = tmp_path / "search"
    log = tmp_path / "launcher.log"
    dead_after_s = 10
    args = [
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.pruner.name=none",
        "hydra.sweeper.heartbeat_s=1",
        f"hydra.sweeper.dead_after_s={dead_after_s}",
        *[o for o in LONG if o != "debug=quick"],
        "training.epochs=3",  # of 4,200 samples: a trial is lost mid-training, with epochs still to train
    ]
    cmd = sweep_command(*slurm, *SMOKE, *args, sweep=out, cache=cache)
    folder = SearchFolder(out)

    def on_extra() -> tuple[int, int] | None:
        """(worker, trial) of the worker on the extra host once its trial trains."""
        for index in (0, 1):
            record = folder.worker_record(index) or {}
            trial = record.get("trial")
            if record.get("host") == extra and trial is not None:
                return (index, trial) if training_in_attempt(out / "trials" / str(trial), 1) else None
        return None

    launcher = None
    try:
        # One CPU of node 1 held: one worker there, the other on the extra host. Held until the takeover,
        # so that the lost worker's requeued job cannot start again on node 1 and take its trial back.
        with node_held(first, cpus=1):
            with open(log, "w") as handle:
                launcher = subprocess.Popen(cmd, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, text=True)
            wait_for(launcher, lambda: on_extra() is not None, "trial training on the extra host", log)
            lost_worker, number = on_extra()
            node_script("lose", extra)
            gone = folder.worker_record(lost_worker)  # its last heartbeat: nothing on that host writes now
            run = out / "trials" / str(number)
            lost_at = RunFolder(run).committed_epoch()
            wait_for(launcher, lambda: len(RunFolder(run).attempts()) == 2, "takeover of the lost trial", log)
        launcher.wait(timeout=900)
    finally:
        if launcher is not None and launcher.poll() is None:
            launcher.kill()
        node_script("restore", extra)
    assert launcher.returncode == 0, log.read_text()[-3000:]

    # Both trials trained to the end, each accounted for in its run folder.
    assert states(out) == {0: "COMPLETE", 1: "COMPLETE"}
    assert_trials_match_their_run_folders(out)
    # The lost trial was resumed at its committed epoch by the worker on the other host, in its folder...
    other = 1 - lost_worker
    lost, taken = RunFolder(run).attempts()
    assert (lost["host"], lost["outcome"]) == (extra, "interrupted"), lost
    # named when Slurm has noticed by then (not responding, down: within SlurmdTimeout = 15 s of the loss)
    assert lost["reason"].startswith(f"lost node {extra} (Slurm: ") or lost["reason"] == (
        "ended without a record (killed)"
    ), lost
    assert (taken["host"], taken["outcome"], taken["start_epoch"]) == (first, "completed", lost_at), taken
    assert lost_at >= 1 and gone["host"] == extra
    trials = {t.number: t for t in folder.trials()}
    assert trials[number].user_attrs["worker"] == other
    assert number in read(out / "workers" / str(other) / "worker.json")["trials"]
    # ...only once the lost worker's heartbeat was dead_after_s old (attempt times are whole seconds):
    # never while it could have been alive, so no two processes trained that folder at once.
    taken_at = datetime.datetime.fromisoformat(taken["started"]).timestamp()
    assert taken_at >= gone["heartbeat_unix"] + dead_after_s - 1, (taken["started"], gone)


def test_the_cluster_scripts_clean_up_after_a_killed_run_and_start_both_hosts_again(two_nodes):
    """scripts/local_slurm/stop.sh after a test run that was killed: a job still running on the extra host
    and a stray process of the run left in its namespace. Every namespace, link, hosts line and daemon is
    gone afterwards, and nothing of the run is left; start.sh then brings the same hosts back."""
    conf = Path("/etc/slurm/slurm.conf")
    if os.geteuid() != 0 or "generated by bionn scripts/local_slurm/start.sh" not in conf.read_text():
        pytest.skip("this cluster was not started by scripts/local_slurm/start.sh: not stopping it")
    others = subprocess.run(["squeue", "-h", "-o", "%i %u %j"], capture_output=True, text=True).stdout.strip()
    if others:  # never stop a cluster under someone else's jobs
        pytest.skip(f"the cluster runs other jobs ({' | '.join(others.splitlines())}): not stopping it")
    [extra, *_] = [n for n in two_nodes if n.startswith("bionn-node")]
    scripts = ROOT / "scripts" / "local_slurm"
    job = subprocess.run(
        ["sbatch", "--parsable", "-w", extra, "-o", "/dev/null", "--wrap", "sleep 3600"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    stray = None
    started = None
    try:
        deadline = time.time() + 300
        while job_state(job) != "RUNNING":
            assert time.time() < deadline, f"the job {job} on {extra} did not start"
            time.sleep(0.2)
        stray = subprocess.Popen(["ip", "netns", "exec", extra, "sleep", "3600"])
        stopped = subprocess.run(
            ["bash", str(scripts / "stop.sh")], capture_output=True, text=True, timeout=300
        )
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert stray.wait(timeout=30) == -9  # killed with its namespace
        netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
        assert "bionn-node" not in netns and "bionn-" not in links, (netns, links)
        assert not list(Path("/etc/netns").glob("bionn-node*"))
        assert "# bionn local_slurm node" not in Path("/etc/hosts").read_text()
        for daemon in ("slurmctld", "slurmd", "slurmstepd", "slurmdbd"):
            deadline = time.time() + 30  # slurmctld's helper (slurmscriptd, named slurmctld) ends after it
            while left := subprocess.run(["pgrep", "-x", daemon], capture_output=True, text=True).stdout:
                assert time.time() < deadline, f"{daemon} still runs 30 s after stop.sh: {left.split()}"
                time.sleep(0.2)
    finally:
        if stray is not None and stray.poll() is None:
            stray.kill()
        env = {**os.environ, "SLURM_LOCAL_NODES": str(len(two_nodes))}
        started = subprocess.run(
            ["bash", str(scripts / "start.sh")], capture_output=True, text=True, timeout=600, env=env
        )
    assert started.returncode == 0, started.stdout + started.stderr
    ran = subprocess.run(
        ["srun", "-N", str(len(two_nodes)), "hostname"], capture_output=True, text=True, timeout=120
    )
    assert sorted(ran.stdout.split()) == two_nodes, ran.stdout + ran.stderr
