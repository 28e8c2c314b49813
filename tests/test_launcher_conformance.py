"""Hydra's own launcher conformance suites, run against both of bionn's launchers.

`LauncherTestSuite` and `IntegrationTestSuite` (hydra.test_utils.launcher_common_tests) are
what every Hydra launcher promises: sweeps of one and two jobs, hydra overrides not swept,
strict configs, custom resolvers, job names, sweep and job folders. bionn's launchers add
resume, detaching and array splitting (docs/sweeps.md); these suites make sure that the
contract underneath still holds. `hydra.searchpath` points at conf/ so that
`hydra/launcher=local` and `hydra/launcher=slurm` are bionn's launchers. The Slurm ones run
on the real local cluster (tests/test_slurm.py explains how it is found or skipped).
"""

from __future__ import annotations

import pytest
from conftest import ROOT
from hydra.test_utils.launcher_common_tests import IntegrationTestSuite, LauncherTestSuite
from test_slurm import slurm_or_skip

SEARCHPATH = f"file://{ROOT / 'conf'}"
LOCAL = [f"hydra.searchpath=[{SEARCHPATH}]", "hydra.launcher.timeout_min=5"]
SLURM = [*LOCAL, "hydra.launcher.cpus_per_task=1", "hydra.launcher.gpus_per_node=0"]


def _integration_cfg(launcher: str, extra: dict) -> dict:
    return {
        "defaults": [{"override hydra/launcher": launcher}],
        "hydra": {"searchpath": [SEARCHPATH], "launcher": {"timeout_min": 5, **extra}},
    }


@pytest.mark.slow
@pytest.mark.parametrize("launcher_name, overrides", [("local", LOCAL)])
class TestLocalLauncher(LauncherTestSuite):
    pass


@pytest.mark.slow
@pytest.mark.parametrize("task_launcher_cfg, extra_flags", [(_integration_cfg("local", {}), ["-m"])])
class TestLocalLauncherIntegration(IntegrationTestSuite):
    pass


@pytest.fixture(autouse=True)
def _hydra_default_version_base():
    """Hydra's suites expect Hydra's default version base, as in a fresh process (their jobs chdir into
    the job folder and log there); an earlier test's compose(version_base="1.3") in this process set 1.3."""
    from hydra.version import _UNSPECIFIED_, VersionBase

    base = VersionBase.instance()
    before, base.version_base = base.version_base, _UNSPECIFIED_
    yield
    base.version_base = before


@pytest.fixture(autouse=True)
def _cluster(request):
    """The Slurm classes need the local cluster: skip (or fail under BIONN_REQUIRE_SLURM=1) without it."""
    if "Slurm" in request.node.nodeid:
        slurm_or_skip()


# Full tier only: the local classes above hold the contract per commit, and the Slurm launcher's own
# behaviour is tested per commit in test_slurm.py and test_sweeps.py.
@pytest.mark.full
@pytest.mark.parametrize("launcher_name, overrides", [("slurm", SLURM)])
class TestSlurmLauncher(LauncherTestSuite):
    pass


@pytest.mark.full
@pytest.mark.parametrize(
    "task_launcher_cfg, extra_flags",
    [(_integration_cfg("slurm", {"cpus_per_task": 1, "gpus_per_node": 0}), ["-m"])],
)
class TestSlurmLauncherIntegration(IntegrationTestSuite):
    pass
