"""A launch's plan without Hydra or Slurm (bionn.sweep_plan, sweep_live, sweep_arrays, sweep_end): which
jobs are finished, live or submitted, with which resources, and what the launcher says about them.

Fast: real run folders and sweep records in tmp_path, real processes for liveness; squeue's answer is
given as the dict bionn.slurm.queue_states returns (the launcher asks squeue for it).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import absent_pid
from omegaconf import OmegaConf

from bionn.config.errors import ConfigError
from bionn.run_folder import ERROR, FINAL, Outcome, RunFolder, finished_validation_loss
from bionn.sweep_arrays import Array, job_resources, plan_arrays, refused_message
from bionn.sweep_end import SweepJobFailed, describe_failure, failures_report, interrupted_message
from bionn.sweep_folder import ENDED_JOBS, SWEEP, Job, SweepFolder, SweepFolderError, SweepRefused
from bionn.sweep_live import live_jobs, live_message, local_job_alive
from bionn.sweep_plan import finished_jobs, plan_launch, submitted_message

HOST = socket.gethostname()
TASK = {"model": {"name": "E"}, "runtime": {"seed": 1}}


def job_config(seed: int, batch_size: int = 8, on_config_change: str = "refuse", **launcher) -> dict:
    """A job's composed config as the launcher holds it: the task's keys and a hydra node."""
    hydra = {
        "launcher": {"_target_": "x.Launcher", "mem_gb": 4, "nodes": 1, "tasks_per_node": 1, "wait": True}
        | launcher,
        "runtime": {"choices": {"dataset": "tiny", "experiment": "A"}, "config_sources": []},
    }
    return {
        "model": {"name": "E"},
        "runtime": {"seed": seed, "on_config_change": on_config_change},
        "dataset": {"shape": {"batch_size": batch_size}},
        "hydra": hydra,
    }


def configs(*seeds: int, **options) -> list:
    return [OmegaConf.create(job_config(seed, **options)) for seed in seeds]


def task(cfg) -> dict:
    """The config the job's task receives: its hydra node left out."""
    return {k: v for k, v in OmegaConf.to_container(cfg).items() if k != "hydra"}


def jobs_of(*seeds: int) -> list[Job]:
    return [Job(n, (f"runtime.seed={seed}",), str(n)) for n, seed in enumerate(seeds)]


def finish(run: RunFolder, config: dict, loss: float | None = 0.25, status: str = "completed") -> dict:
    """A run folder holding `config`'s ledger and its final results."""
    run.path.mkdir(parents=True, exist_ok=True)
    run.write_ledger(config)
    final = {"status": status, "evaluation": {"validation": {"loss": loss}} if loss is not None else {}}
    run.write_json(FINAL, final)
    return final


# ---- resume planning --------------------------------------------------------------------


def test_a_job_finished_with_the_same_config_is_not_submitted_and_hands_back_its_loss(tmp_path):
    folder, jobs, cfgs = SweepFolder(tmp_path), jobs_of(1, 2), configs(1, 2)
    final = finish(folder.run_folder(jobs[0]), task(cfgs[0]))
    asked = []
    found = finished_jobs(folder, jobs, cfgs, lambda cfg: asked.append(cfg.runtime.seed) or task(cfg))
    assert found == {0: final} and asked == [1]  # job 1 has no ledger: its config is not resolved
    assert finished_validation_loss(found[0]) == 0.25
    assert finished_validation_loss({"status": "nan", "evaluation": {}}) == float("inf")


def test_a_folder_holding_another_config_or_a_lost_finished_run_refuses_the_launch(tmp_path):
    folder, jobs, cfgs = SweepFolder(tmp_path), jobs_of(1, 2, 3), configs(1, 2, 3)
    finish(folder.run_folder(jobs[0]), task(cfgs[0]) | {"model": {"name": "P"}})  # another config
    finish(folder.run_folder(jobs[2]), task(cfgs[2]))
    folder.record_launch(jobs, ["runtime.seed=1,2,3"], {}, {"finished": [1, 2]})  # job 1 finished once
    with pytest.raises(SweepRefused) as refused:
        finished_jobs(folder, jobs, cfgs, task)
    message = str(refused.value)
    assert message.startswith(
        f"{tmp_path}: refusing to launch, nothing was submitted (nothing was changed):\n"
    )
    assert f"  job #0: {tmp_path / '0'} holds a run of another config" in message
    assert '    model.name: "P" (in the folder) -> "E" (this run)' in message
    assert (
        f"  job #1: its run folder {tmp_path / '1'} is missing (it held a finished run at an earlier launch; "
        f"{tmp_path / SWEEP} records it): restore it, or sweep into another folder"
    ) in message
    assert "job #2" not in message
    # move_aside: another config's folder is no refusal (the job moves it aside itself).
    cfgs[0] = OmegaConf.create(job_config(1, on_config_change="move_aside"))
    (tmp_path / "1").mkdir()
    with pytest.raises(SweepRefused, match="no longer holds its final results") as refused:
        finished_jobs(folder, jobs, cfgs, task)
    assert "job #0" not in str(refused.value)


def test_an_unreadable_ledger_refuses_the_launch_naming_the_file(tmp_path):
    folder, jobs = SweepFolder(tmp_path), jobs_of(1)
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "ledger.json").write_text("{")
    with pytest.raises(SweepRefused, match=r"  job #0: .*ledger.json: not valid JSON"):
        finished_jobs(folder, jobs, configs(1), task)


def test_the_plan_skips_finished_and_live_jobs_and_gives_the_rest_their_resources(tmp_path):
    folder, jobs = SweepFolder(tmp_path), jobs_of(1, 2, 3, 4)
    cfgs = configs(1, 2, 3, 4)
    final = finish(folder.run_folder(jobs[0]), task(cfgs[0]))
    array = {"job_ids": {"1": "50_1", "2": "50_2"}}
    folder.record_launch(jobs, ["runtime.seed=1,2,3,4"], {}, {"launcher": "slurm", "arrays": [array]})
    rules = [{"when": {"runtime.seed": [3]}, "mem_gb": 64}]
    queue = {"50_1": "PENDING", "50_2": "COMPLETED"}
    plan = plan_launch(folder, jobs, cfgs, ["runtime.seed=1,2,3,4"], rules, task, queue=lambda: queue)
    assert plan.finished == {0: final} and plan.live == {
        1: "Slurm job 50_1 is PENDING (cancel it: scancel 50_1)"
    }
    assert [(params["mem_gb"], job.num) for params, job in plan.todo] == [(64, 2), (4, 3)]
    assert "wait" not in plan.todo[0][0] and "_target_" not in plan.todo[0][0]  # sweep-wide keys left out
    assert plan.record("slurm", False) == {
        "launcher": "slurm",
        "wait": False,
        "submitted": [2, 3],
        "finished": [0],
        "live": [1],
        "arrays": [],
    }
    assert plan.job_lines(list) == [
        "\t#0 : runtime.seed=1  (finished: completed; not submitted)",
        "\t#1 : runtime.seed=2",
        "\t#2 : runtime.seed=3",
        "\t#3 : runtime.seed=4",
    ]
    assert live_message(plan.live, tmp_path) == (
        "bionn: 1 job(s) of the sweep are still pending or running; not submitted again:\n"
        "  #1: Slurm job 50_1 is PENDING (cancel it: scancel 50_1)\n"
        f"Wait for them (bionn-report {tmp_path} --watch), or cancel them and launch again."
    )


def test_the_plan_refuses_another_job_list_and_a_batch_its_workers_cannot_share(tmp_path):
    folder, jobs = SweepFolder(tmp_path), jobs_of(1, 2)
    folder.record_launch(jobs, ["runtime.seed=1,2"], {}, {})
    moved = [Job(0, ("runtime.seed=5",), "0"), jobs[1]]
    with pytest.raises(SweepRefused, match=r"  job #0: runtime.seed=1 \(recorded\) -> runtime.seed=5"):
        plan_launch(folder, moved, configs(5, 2), ["runtime.seed=5,2"], [], task, queue=lambda: None)
    split = configs(1, 2, batch_size=10, nodes=2, tasks_per_node=2)
    with pytest.raises(ConfigError, match="batch_size = 10 cannot be split across hydra.launcher.nodes = 2"):
        plan_launch(folder, jobs, split, ["runtime.seed=1,2"], [], task, queue=lambda: None)
    assert len(folder.record()["launches"]) == 1  # nothing recorded by a refused plan


# ---- resources and arrays ---------------------------------------------------------------


def test_per_job_rules_apply_in_order_by_key_or_config_group_and_bad_ones_are_named():
    cfg = OmegaConf.create(job_config(3))
    rules = [{"when": {"experiment": "A"}, "mem_gb": 32}, {"when": {"runtime.seed": [2, 3]}, "nodes": 2}]
    assert job_resources(cfg, rules) == {"mem_gb": 32, "nodes": 2, "tasks_per_node": 1}
    assert job_resources(cfg, [{"when": {"experiment": "B"}, "mem_gb": 32}])["mem_gb"] == 4
    with pytest.raises(
        ValueError, match=r"hydra.launcher.per_job\[0\] = \{'mem_gb': 8\} is invalid: each rule is "
    ):
        job_resources(cfg, [{"mem_gb": 8}])
    with pytest.raises(
        ValueError, match=r"per_job\[0\]: gpus is no resource key of this launcher \(allowed: mem_gb"
    ):
        job_resources(cfg, [{"when": {"experiment": "A"}, "gpus": 1}])
    with pytest.raises(
        ValueError, match="per_job\\[0\\]: when: colour is no key of the job's config, nor a config"
    ):
        job_resources(cfg, [{"when": {"colour": "red"}, "mem_gb": 8}])


def test_arrays_group_equal_resources_split_at_the_limit_and_share_the_parallelism():
    jobs = [({"mem_gb": 4 if n < 5 else 8}, Job(n, (f"x={n}",), str(n))) for n in range(7)]
    arrays = plan_arrays(jobs, max_size=3, parallelism=4)
    assert [[j.num for j in a.jobs] for a in arrays] == [[0, 1, 2], [3, 4], [5, 6]]
    assert [a.params["mem_gb"] for a in arrays] == [4, 4, 8]
    assert sum(a.throttle for a in arrays) == 4 and all(a.after is None for a in arrays)
    # More arrays than the parallelism: one job at a time each, and at most 2 arrays at once.
    arrays = plan_arrays(jobs, max_size=2, parallelism=2)
    assert [a.throttle for a in arrays] == [1, 1, 1, 1]
    assert [a.after for a in arrays] == [None, None, 0, 1]
    # No limit and enough parallelism: one array per resource set, every job at once.
    arrays = plan_arrays(jobs, max_size=None, parallelism=256)
    assert [len(a.jobs) for a in arrays] == [5, 2] and [a.throttle for a in arrays] == [5, 2]


def test_an_array_records_its_ids_and_a_refused_one_is_told_in_one_paragraph(tmp_path):
    array = Array({"mem_gb": 4}, jobs_of(1, 2), throttle=2)
    record = array.record(["77_0", "77_1"])
    assert record == {
        "array_id": "77",
        "jobs": [0, 1],
        "job_ids": {"0": "77_0", "1": "77_1"},
        "throttle": 2,
        "resources": {"mem_gb": 4},
    }
    err = RuntimeError("sbatch: error: Memory specification can not be satisfied\n")
    assert refused_message(tmp_path, array, [], err) == (
        f"bionn: error: Slurm refused to submit job(s) #0, #1 of the sweep {tmp_path}: sbatch: error: Memory "
        "specification can not be satisfied\nNothing was submitted. Ask for resources the cluster has "
        "(sinfo -N -o '%N %c %m %G' lists its nodes) and run the same command again."
    )
    assert (
        f"The arrays submitted before it (77) run on; {tmp_path / SWEEP} records them. "
        in refused_message(tmp_path, array, [record], err)
    )


# ---- liveness ---------------------------------------------------------------------------


def test_a_job_whose_attempt_still_runs_on_this_host_is_live_and_named(tmp_path):
    folder = SweepFolder(tmp_path)
    jobs = [Job(0, ("runtime.seed=1",), "0"), Job(1, ("runtime.seed=2",), "1")]
    running = RunFolder(tmp_path / "0")
    running.begin_attempt(None)  # this test's process: alive on this host, no Slurm job
    ended = RunFolder(tmp_path / "1")
    ended.begin_attempt(None)
    ended.end_attempt(Outcome.INTERRUPTED, reason="interrupted by SIGINT")
    assert live_jobs(folder, jobs, queue=None) == {
        0: f"process {os.getpid()} on {os.uname().nodename} trains it (stop it: kill -INT {os.getpid()})"
    }
    running.end_attempt(Outcome.INTERRUPTED, reason="interrupted by SIGINT")
    assert live_jobs(folder, jobs, queue=None) == {}


@pytest.fixture
def sleeper():
    """Start a real process that sleeps, with `argument` on its command line; ended at teardown."""
    started = []

    def start(argument: str) -> int:
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", argument])
        started.append(proc)
        return proc.pid

    yield start
    for proc in started:
        proc.kill()
        proc.wait()


def test_a_local_job_is_alive_while_its_submitit_process_runs_here(tmp_path, sleeper):
    submitit_pid, other_pid = sleeper("submitit"), sleeper("something-else")
    assert local_job_alive(str(submitit_pid))
    assert not local_job_alive(str(other_pid))  # a process, but not the job's: the pid was reused
    assert not local_job_alive(str(absent_pid())) and not local_job_alive(None) and not local_job_alive("7_0")
    folder, jobs = SweepFolder(tmp_path), jobs_of(1, 2)
    ids = {"0": str(submitit_pid), "1": str(absent_pid())}
    folder.record_launch(jobs, ["runtime.seed=1,2"], {}, {"launcher": "local", "arrays": [{"job_ids": ids}]})
    assert live_jobs(folder, jobs, queue=None) == {
        0: f"process {submitit_pid} on {HOST} is starting it (stop it: kill -INT {submitit_pid})"
    }


def test_a_job_squeue_holds_queued_or_running_is_live_by_its_own_or_its_attempts_id(tmp_path):
    folder, jobs = SweepFolder(tmp_path), jobs_of(1, 2, 3)
    ids = {"0": "60_0", "1": "60_1", "2": "60_2"}
    folder.record_launch(
        jobs, ["runtime.seed=1,2,3"], {}, {"launcher": "slurm", "arrays": [{"job_ids": ids}]}
    )
    folder.run_folder(jobs[1]).begin_attempt({"job_id": "61", "array_job_id": "61", "array_task_id": 0})
    queue = {"60_0": "RUNNING", "60_1": "COMPLETED", "61_0": "REQUEUED", "60_2": "FAILED"}
    assert live_jobs(folder, jobs, queue) == {
        0: "Slurm job 60_0 is RUNNING (cancel it: scancel 60_0)",
        1: "Slurm job 61_0 is REQUEUED (cancel it: scancel 61_0)",
    }
    assert live_jobs(folder, jobs, None) == {}  # no squeue answer; the attempt is a Slurm job's


# ---- ended jobs -------------------------------------------------------------------------


def test_ended_jobs_are_noted_in_the_sweep_folder_and_taken_once_by_their_own_process(tmp_path):
    folder = SweepFolder(tmp_path)
    assert folder.take_ended() == []
    stale = [{"run_dir": "/old", "overrides": [], "why": "x", "host": HOST, "pid": absent_pid()}]
    (tmp_path / ENDED_JOBS).write_text(json.dumps(stale))  # left by a launch that died before its report
    folder.note_ended(tmp_path / "0", ["runtime.seed=1"], "KeyError: 'a'")
    folder.note_ended(tmp_path / "1", ["runtime.seed=2"], "ended OUT_OF_MEMORY")
    assert folder.take_ended() == [
        (str(tmp_path / "0"), ["runtime.seed=1"], "KeyError: 'a'"),
        (str(tmp_path / "1"), ["runtime.seed=2"], "ended OUT_OF_MEMORY"),
    ]
    assert not (tmp_path / ENDED_JOBS).exists() and folder.take_ended() == []
    (tmp_path / ENDED_JOBS).write_text('{"run_dir": 1}')
    with pytest.raises(SweepFolderError, match=f"{tmp_path / ENDED_JOBS}: expected a list of"):
        folder.take_ended()


def test_every_job_ended_once_each_run_folder_holds_a_final_status(tmp_path):
    folder, jobs = SweepFolder(tmp_path), jobs_of(1, 2)
    folder.record_launch(jobs, ["runtime.seed=1,2"], {}, {})
    finish(folder.run_folder(jobs[0]), TASK)
    assert not folder.every_job_ended()  # job 1 has no run folder yet
    finish(folder.run_folder(jobs[1]), TASK, loss=None, status="failed")
    assert folder.every_job_ended()


def test_a_failed_job_is_described_by_its_error_record_its_exception_or_its_end(tmp_path):
    job, run, log = Job(3, ("runtime.seed=4", "model=P"), "3"), RunFolder(tmp_path / "3"), tmp_path / "3.err"
    label, why = describe_failure(job, run, "70_3", "OUT_OF_MEMORY", log, None)
    assert label == "#3 (runtime.seed=4 model=P)"
    assert why == f"run folder {run.path}, job 70_3: ended OUT_OF_MEMORY without {ERROR}; job log: {log}"
    lost = SweepJobFailed.without_result(job, "70_3", "OUT_OF_MEMORY", log)
    assert str(lost) == f"job #3 (70_3) ended OUT_OF_MEMORY without a result; see {log}"
    assert describe_failure(job, run, "70_3", "FAILED", log, lost)[1].endswith(f"job log: {log}")
    assert describe_failure(job, run, "70_3", "FAILED", log, KeyError("a"))[1].endswith(": KeyError: 'a'")
    run.path.mkdir()
    run.write_json(ERROR, {"type": "ValueError", "message": "boom"})
    assert describe_failure(job, run, "70_3", "FAILED", log, KeyError("a"))[1] == (
        f"run folder {run.path}, job 70_3: ValueError: boom (see {run / ERROR})"
    )
    assert failures_report([(label, why)], 4, tmp_path) == (
        f"1 of 4 sweep job(s) failed:\n  {label}\n     {why}\nThe sweep's table of every job: bionn-report "
        f"{tmp_path}"
    )


def test_the_launchers_other_words_are_kept():
    sweep = Path("multirun/s")
    assert submitted_message(sweep, "slurm", ["5_0", "5_1", "6_0"], 2) == (
        "bionn: submitted 3 job(s) of the sweep multirun/s as Slurm array(s) 5, 6; 2 finished job(s) not "
        "submitted\nbionn: watch it:   bionn-report multirun/s --watch\n"
        "bionn: resume it:  bionn-sweep resume multirun/s   (the last job to end writes the report)"
    )
    assert submitted_message(sweep, "local", [], 0).startswith(
        "bionn: submitted 0 job(s) of the sweep multirun/s\n"
    )
    assert interrupted_message(sweep, "local") == (
        "\nbionn: interrupted while waiting for the sweep multirun/s; the jobs got the signal too and record "
        "their interruption. Follow it: bionn-report multirun/s --watch; resume what did not finish: "
        "bionn-sweep resume multirun/s"
    )
    assert "; the jobs go on in Slurm. Follow it:" in interrupted_message(sweep, "slurm")


def test_in_a_launch_that_does_not_wait_the_last_job_to_end_writes_the_report(tmp_path, monkeypatch):
    from bionn.report import SweepReport

    monkeypatch.chdir(tmp_path)
    folder, jobs = SweepFolder(tmp_path / "sweep"), jobs_of(1, 2)
    folder.record_launch(jobs, ["runtime.seed=1,2"], {}, {})
    hydra = {"sweep": {"dir": "sweep"}, "runtime": {"cwd": str(tmp_path)}, "launcher": {"wait": False}}
    finish(folder.run_folder(jobs[0]), TASK)
    SweepReport().on_job_end(config=OmegaConf.create({"hydra": hydra}))
    assert not (folder / "summary.csv").exists()  # job 1 runs on
    finish(folder.run_folder(jobs[1]), TASK, loss=None, status="failed")
    SweepReport().on_job_end(config=OmegaConf.create({"hydra": hydra | {"launcher": {"wait": True}}}))
    assert not (folder / "summary.csv").exists()  # a waiting launch reports at the sweep's end
    SweepReport().on_job_end(config=OmegaConf.create({"hydra": hydra}))
    assert (folder / "summary.csv").read_text().count("\n") == 3  # the header and both jobs
