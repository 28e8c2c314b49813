"""Fast checks of the multi-worker pieces: batch shards, Slurm environment, launcher configs."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import composed

from bionn.data.stats import compute_statistics
from bionn.slurm import current_worker, slurm_info


@pytest.mark.parametrize("chunk_samples", [2048, 48])
def test_worker_shards_together_feed_exactly_the_unsharded_batches(small_dataset, monkeypatch, chunk_samples):
    import bionn.backend.tensorflow as backend
    import bionn.data.pipeline as pipeline

    monkeypatch.setattr(pipeline, "CHUNK_SAMPLES", chunk_samples)  # chunked and per-batch paths
    stats = compute_statistics(small_dataset, 200, progress=False)
    clock = pipeline.EpochClock(epoch=1)
    source = pipeline.batch_source(small_dataset, "train", stats, clock, batch_size=24)
    whole = list(backend.make_dataset(source).as_numpy_iterator())
    # 2 workers with 2 replicas each: worker w feeds replicas 2w, 2w+1 of every batch, in that order
    shards = [
        list(
            backend.make_dataset(
                pipeline.batch_source(
                    small_dataset,
                    "train",
                    stats,
                    clock,
                    batch_size=24,
                    shard=pipeline.ReplicaShard(2 * w, 2, 4),
                )
            ).as_numpy_iterator()
        )
        for w in range(2)
    ]
    assert len(shards[0]) == len(shards[1]) == 2 * len(whole) == 18  # 9 batches x 2 local replicas
    for b, (features, labels) in enumerate(whole):
        parts = [shards[w][2 * b + r] for w in range(2) for r in range(2)]
        if len(labels) == 24:
            assert [len(p[1]) for p in parts] == [6, 6, 6, 6]
        np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), features)
        np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), labels)


def test_a_batch_that_does_not_split_evenly_is_refused(small_dataset):
    import bionn.data.pipeline as pipeline

    stats = compute_statistics(small_dataset, 50, progress=False)
    with pytest.raises(ValueError, match="batch size 25 does not split evenly across 2 replicas"):
        pipeline.batch_source(
            small_dataset, "val", stats, batch_size=25, shard=pipeline.ReplicaShard(0, 1, 2)
        )


def test_slurm_environment_is_recorded(monkeypatch):
    for key in ("SLURM_JOB_ID", "SLURM_STEP_NUM_TASKS", "SLURM_PROCID", "SLURM_RESTART_COUNT"):
        monkeypatch.delenv(key, raising=False)
    assert slurm_info() is None and current_worker().is_chief and current_worker().count == 1
    env = {
        "SLURM_JOB_ID": "12",
        "SLURM_ARRAY_JOB_ID": "10",
        "SLURM_ARRAY_TASK_ID": "2",
        "SLURM_RESTART_COUNT": "1",
        "SLURM_STEP_NODELIST": "node[1-2]",
        "SLURM_STEP_NUM_TASKS": "4",
        "SLURM_PROCID": "3",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert slurm_info() == {
        "job_id": "12",
        "array_job_id": "10",
        "array_task_id": 2,
        "restart_count": 1,
        "nodelist": "node[1-2]",
        "ntasks": 4,
        "procid": 3,
    }
    worker = current_worker()
    assert (worker.index, worker.count, worker.is_chief) == (3, 4, False)


def launcher(*overrides: str):
    return composed(*overrides, with_hydra=True).hydra.launcher


def test_slurm_launcher_defaults_match_the_older_job_scripts_and_the_documented_requeue_budget():
    """Composition only; that these keys reach sbatch is checked on the real cluster in test_slurm.py."""
    cfg = launcher("hydra/launcher=slurm")
    assert cfg._target_ == "hydra_plugins.bionn_launcher.launcher.SlurmLauncher"
    assert (cfg.nodes, cfg.tasks_per_node, cfg.gpus_per_node, cfg.cpus_per_task) == (1, 1, 1, 8)
    assert (cfg.timeout_min, cfg.max_num_timeout, cfg.signal_delay_s) == (72 * 60, 3, 120)
    for key in ("partition", "account", "qos", "gres", "constraint", "setup"):
        assert cfg[key] is None
    assert cfg.additional_parameters == {}


def test_slurm_launcher_keys_are_overridable_from_the_command_line():
    cfg = launcher(
        "hydra/launcher=slurm",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.account=proj1",
        "hydra.launcher.qos=long",
        "hydra.launcher.gres=gpu:a100:2",
        "hydra.launcher.constraint=a100",
        "hydra.launcher.setup=[module load cuda,source env.sh]",
        "+hydra.launcher.additional_parameters.mail-type=END",
        "hydra.launcher.nodes=2",
    )
    assert (cfg.partition, cfg.account, cfg.qos, cfg.gres, cfg.constraint) == (
        "gpu",
        "proj1",
        "long",
        "gpu:a100:2",
        "a100",
    )
    assert list(cfg.setup) == ["module load cuda", "source env.sh"]
    assert cfg.additional_parameters == {"mail-type": "END"} and cfg.nodes == 2


def test_local_launcher_composes_without_slurm_keys():
    cfg = launcher("hydra/launcher=local")
    assert cfg._target_ == "hydra_plugins.bionn_launcher.launcher.LocalLauncher"
    assert "partition" not in cfg and cfg.timeout_min == 72 * 60


def test_jobs_sharing_a_node_get_disjoint_port_blocks_below_the_ephemeral_range():
    from bionn.backend import PORT_SLOTS, PORT_STRIDE, port_base

    blocks = [range(port_base(job), port_base(job) + PORT_STRIDE) for job in range(1000, 1000 + PORT_SLOTS)]
    ports = [port for block in blocks for port in block]
    assert len(set(ports)) == len(ports)  # any PORT_SLOTS consecutive job ids never share a port
    assert min(ports) > 1024 and max(ports) < 32768  # unprivileged, and not where Linux picks client ports
    assert port_base(7) == port_base(7 + PORT_SLOTS)  # the documented limit: ids equal modulo PORT_SLOTS
