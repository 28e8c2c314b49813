"""Training across two hosts: the two-node local Slurm cluster (scripts/local_slurm/start.sh with
SLURM_LOCAL_NODES=2, as scripts/test.sh starts it).

Node 2 is its own network and UTS namespace (hostname bionn-node2, address 127.0.2.2), so the two
workers of a `hydra.launcher.nodes=2` job run on different hosts: different hostnames, addresses and
gRPC between them. The cluster is found or skipped as in tests/test_slurm.py; with fewer than two
usable nodes these tests skip (fail under BIONN_REQUIRE_SLURM=1). docs/slurm.md says what each proves.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from contextlib import contextmanager

import pytest
from conftest import ROOT, training_in_attempt
from test_search_slurm import assert_trials_match_their_run_folders, search, states
from test_slurm import (  # noqa: F401  (fixtures)
    LONG,
    PREEMPT,
    assert_resumed_attempts,
    assert_weights_equal,
    cache,
    job_logs,
    one_process_two_replicas,
    read,
    slurm,
    sweep,
    sweep_command,
    sweep_interrupted,
)

from bionn.run_folder import RunFolder

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


def test_two_node_job_preempted_resumes_both_hosts_at_one_epoch_and_ends_bit_equal_to_one_process(
    slurm,  # noqa: F811
    two_nodes,
    cache,  # noqa: F811
    one_process_two_replicas,  # noqa: F811
    tmp_path,
):
    out = tmp_path / "sweep"
    run = out / "0"
    debug = "hydra.verbose=bionn.train"  # each worker logs its weights' digest at DEBUG
    cmd = sweep_command(*slurm, *TWO_NODES, debug, "model=P", *LONG, sweep=out, cache=cache)
    done = sweep_interrupted(cmd, run, tmp_path / "launcher.log", PREEMPT)
    assert done.returncode == 0, done.output[-3000:]

    # One writer: one record per start, each epoch once; both attempts recorded by the chief's host.
    first, second = assert_resumed_attempts(run, interruptions=1, epochs=6)
    assert first["reason"] == "interrupted by SIGUSR2", first
    info = read(run / "info.json")
    assert info["workers"] == 2 and info["replicas"] == 2 and info["slurm"]["ntasks"] == 2
    hosts = hostnames(info["slurm"]["nodelist"])
    assert len(set(hosts)) == 2 and set(hosts) <= set(two_nodes), hosts  # the run folder names both hosts
    assert first["host"] == second["host"] == hosts[0]  # task 0, the chief, on the first node

    # Each host's worker ran both attempts and resumed at the epoch the chief committed.
    logs = {}
    for task in (0, 1):
        [log] = job_logs(out, task)
        logs[task] = log.read_text()
    resumed = {t: re.findall(r"resuming \S+ at epoch (\d+)", text) for t, text in logs.items()}
    assert resumed[0] == resumed[1] == [str(second["start_epoch"] + 1)], resumed
    workers_hosts = {
        t: re.search(r"JobEnvironment\(job_id=\S+, hostname=([^,]+),", text).group(1)
        for t, text in logs.items()
    }
    assert sorted(workers_hosts.values()) == sorted(hosts), workers_hosts
    digests = {
        t: re.findall(rf"worker {t}/2 weights sha256 ([0-9a-f]{{64}})", text) for t, text in logs.items()
    }
    assert digests[0] and digests[0][-1] == digests[1][-1], digests

    # The two hosts' batch slices make the same steps as one process with 2 replicas.
    assert_weights_equal(run, one_process_two_replicas)


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
    assert (lost["host"], lost["outcome"], lost["reason"]) == (
        extra,
        "interrupted",
        "ended without a record (killed)",
    )
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


def test_a_search_whose_two_workers_run_on_different_hosts_trains_every_trial(
    slurm,  # noqa: F811
    two_nodes,
    cache,  # noqa: F811
    tmp_path,
):
    [extra, *_] = [n for n in two_nodes if n.startswith("bionn-node")]
    [first] = [n for n in two_nodes if n == socket.gethostname()]
    out = tmp_path / "search"
    with node_held(first, cpus=1):  # one CPU left on node 1: one worker there, the other on the extra node
        done = search(*slurm, sweep=out, cache=cache)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    workers = [read(out / "workers" / str(i) / "worker.json") for i in (0, 1)]
    assert sorted(w["host"] for w in workers) == sorted([first, extra]), workers
    assert sorted(states(out)) == [0, 1, 2, 3]
    assert set(states(out).values()) <= {"COMPLETE", "PRUNED"}
    assert sorted(n for w in workers for n in w["trials"]) == [0, 1, 2, 3]
    assert_trials_match_their_run_folders(out)
