"""Pinned libraries: pyproject.toml pins what bionn patches or copies to the tested release line,
requirements.lock holds the tested versions, and this environment is that one."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import PackageNotFoundError, version

import pytest
from conftest import ROOT
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from bionn.pins import ALLOW_ENV, TESTED_LINES, UntestedVersionError, require_tested, untested_message

REFRESH = "refresh requirements.lock as docs/testing.md says, then run `bash scripts/setup.sh`"


def pyproject_requirements() -> dict[str, Requirement]:
    """The dependencies, the test tools and JAX for CPU (the extras requirements.lock is compiled with)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    found = [Requirement(r) for r in project["dependencies"] + extras["test"] + extras["jax"]]
    return {canonicalize_name(r.name): r for r in found}


def locked_versions(environment: dict[str, str] | None = None) -> dict[str, str]:
    """Name -> version of every requirements.lock row that applies to this interpreter (or to the
    one whose marker `environment` is given: packaging's default_environment() there)."""
    locked = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate(environment):
                locked[canonicalize_name(req.name)] = str(next(iter(req.specifier)).version)
    return locked


@pytest.mark.parametrize("distribution", sorted(TESTED_LINES))
def test_pyproject_pins_the_tested_release_line(distribution):
    line = TESTED_LINES[distribution][0]
    major, minor = (int(x) for x in line.split("."))
    spec = pyproject_requirements()[canonicalize_name(distribution)].specifier
    assert set(str(spec).split(",")) == {f">={line}", f"<{major}.{minor + 1}"}, (
        f"pyproject.toml pins {distribution}{spec}; bionn/pins.py says it is tested with {line}.*"
    )


@pytest.mark.parametrize("distribution", sorted(TESTED_LINES))
def test_the_installed_release_is_the_tested_one(distribution):
    installed = version(distribution)
    line = TESTED_LINES[distribution][0]
    assert re.fullmatch(rf"{re.escape(line)}(\..*)?", installed), untested_message(distribution, installed)
    require_tested(distribution)


def test_another_release_is_refused_with_what_to_do(monkeypatch):
    monkeypatch.delenv(ALLOW_ENV, raising=False)
    with pytest.raises(
        UntestedVersionError, match=r"keras 3\.16\.0 is installed, but bionn is tested with keras 3\.15\.\*"
    ):
        require_tested("keras", "3.16.0")
    with pytest.raises(
        UntestedVersionError, match=r"copies part of BaseSubmititLauncher\.launch\(\).*scripts/setup\.sh"
    ):
        require_tested("hydra-submitit-launcher", "1.3.0")
    require_tested("keras", "3.15.9")
    monkeypatch.setenv(ALLOW_ENV, "1")
    require_tested("keras", "3.16.0")


def test_the_lock_satisfies_pyproject_and_pins_the_tested_lines():
    locked = locked_versions()
    for name, req in pyproject_requirements().items():
        assert name in locked, f"requirements.lock lacks {name}: {REFRESH}"
        assert req.specifier.contains(locked[name]), (
            f"requirements.lock has {name}=={locked[name]}, not {req}"
        )
    for distribution, (line, _) in TESTED_LINES.items():
        assert locked[canonicalize_name(distribution)].startswith(f"{line}.")


def test_this_environment_is_the_locked_one():
    wrong = []
    for name, pinned in locked_versions().items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = "missing"
        if installed != pinned:
            wrong.append(f"{name} {installed} (locked {pinned})")
    assert not wrong, f"not the tested versions: {', '.join(wrong)}; run `bash scripts/setup.sh`"
