"""Schemas of bionn's launcher configs: hydra-submitit-launcher's, plus the keys of a sweep's life."""

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf, SlurmQueueConf


@dataclass
class SweepKeys:
    # false: return once the jobs are submitted (print the sweep folder, the job ids and how to watch);
    # the last job to end writes the sweep report.
    wait: bool = True
    # Resources that depend on the job's own config: rules applied in order to every job whose config
    # matches `when`, e.g. [{when: {experiment: P2}, mem_gb: 64, gpus_per_node: 2}] (docs/sweeps.md).
    # Jobs with equal resources share a Slurm array.
    per_job: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class BionnSlurmConf(SweepKeys, SlurmQueueConf):
    _target_: str = "hydra_plugins.bionn_launcher.launcher.SlurmLauncher"
    # Jobs per Slurm array; null asks the cluster (`scontrol show config`: MaxArraySize).
    max_array_size: Optional[int] = None  # noqa: UP045 (OmegaConf 2.3 reads no X | None)


@dataclass
class BionnLocalConf(SweepKeys, LocalQueueConf):
    _target_: str = "hydra_plugins.bionn_launcher.launcher.LocalLauncher"


ConfigStore.instance().store(group="hydra/launcher", name="bionn_slurm_schema", node=BionnSlurmConf)
ConfigStore.instance().store(group="hydra/launcher", name="bionn_local_schema", node=BionnLocalConf)
