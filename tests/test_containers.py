"""The Dockerfile and apptainer.def: the image built and run for real, the definition kept in step.

The container tests (marker `container`, also `slow`) build the Dockerfile unchanged with
`buildah bud --isolation chroot` on a stand-in base (scripts/container/standin_base.sh: Debian
bookworm with python3 and pip, no CUDA), check that it holds requirements.lock's versions, then run
a quick training, a two-job local sweep and two bad inputs in it with `buildah run --isolation chroot`
as a non-root user, the results folder on the host. That proves the Dockerfile's steps, the entry
point and the results contract; it does not prove the official GPU base (CUDA, cuDNN, its Python)
nor GPU training. No image registry is reachable and
podman/docker-style runs fail here (setrlimit is forbidden): docs/containers.md says more.
They need root, buildah and debootstrap (scripts/container/setup.sh, run by scripts/test.sh) and skip
without them, unless BIONN_REQUIRE_CONTAINER=1 (set by scripts/test.sh): then they fail.
Apptainer does not install here: its definition is checked against the Dockerfile by parsing both.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT

IMAGE = "localhost/bionn:test"
USER = "4321:4321"  # no such user in the image: "runs as any --user"
QUICK = ["debug=quick", "training.verbose=2"]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of ROOT/Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def copied_sources() -> list[str]:
    """What the Dockerfile's COPY instructions take from the build context."""
    return [name for i, a in dockerfile_instructions() if i == "COPY" for name in a.split()[:-1]]


def dockerfile_env() -> dict[str, str]:
    env = {}
    for instruction, arguments in dockerfile_instructions():
        if instruction == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(arguments))
    return env


def apptainer_sections() -> tuple[str, dict[str, str]]:
    """The header and the %sections of ROOT/apptainer.def."""
    definition = (ROOT / "apptainer.def").read_text()
    header, *rest = re.split(r"^%(\w+)\n", definition, flags=re.M)
    return header, dict(zip(rest[::2], rest[1::2], strict=True))


def apptainer_env() -> dict[str, str]:
    _, sections = apptainer_sections()
    exports = re.findall(r"^\s*export (\w+)=(.*)$", sections["environment"], re.M)
    return {name: shlex.split(value)[0] for name, value in exports}


# --- The files, no engine needed --------------------------------------------------------------------


def test_dockerfile_uses_the_pinned_tensorflow_and_copies_what_exists():
    dockerfile = (ROOT / "Dockerfile").read_text()
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = next(
        re.fullmatch(r"tensorflow>=(\d+\.\d+),<[\d.]+", p).group(1)
        for p in pins
        if p.startswith("tensorflow>")
    )
    version = re.search(r"^ARG TF_VERSION=(\S+)$", dockerfile, re.M).group(1)
    assert version.startswith(pinned + ".")
    # The official image is the default; the test suite passes its stand-in as BASE_IMAGE.
    assert "ARG BASE_IMAGE=tensorflow/tensorflow:${TF_VERSION}-gpu" in dockerfile
    assert ("FROM", "${BASE_IMAGE}") in dockerfile_instructions()
    assert all((ROOT / name).exists() for name in copied_sources()), copied_sources()
    # Every package pyproject.toml installs is copied before `pip install .` (hydra_plugins once was not).
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = {p.rstrip("*") for p in find["include"]}
    assert packages <= set(copied_sources())


def test_apptainer_definition_has_the_dockerfiles_environment_entry_point_and_results_folder():
    header, sections = apptainer_sections()
    assert {"environment", "runscript", "test", "help"} <= set(sections)
    assert re.search(r"^Bootstrap: docker-archive\nFrom: bionn.tar$", header, re.M)

    # The same variables; the same values, except that the caches under /tmp get a per-user suffix
    # (Apptainer shares the host's /tmp between users; every Docker container has its own).
    docker, apptainer = dockerfile_env(), apptainer_env()
    assert set(apptainer) == set(docker)
    for name, value in docker.items():
        if value.startswith("/tmp/"):
            assert apptainer[name] == value + "-${USER:-bionn}", name
        else:
            assert apptainer[name] == value, name

    # One entry point: the Dockerfile's ENTRYPOINT is the script the runscript executes.
    instructions = dockerfile_instructions()
    entrypoint = json.loads(next(a for i, a in instructions if i == "ENTRYPOINT"))
    assert entrypoint == ["/app/entrypoint.sh"]
    assert ("COPY", "scripts/container/entrypoint.sh ./") in instructions
    runscript = [line.strip() for line in sections["runscript"].splitlines() if line.strip()]
    assert [line for line in runscript if not line.startswith("#")] == ['exec /app/entrypoint.sh "$@"']

    # One results folder: the entry point's, the Dockerfile's working folder, the one bound in the docs.
    entry = (ROOT / "scripts/container/entrypoint.sh").read_text()
    assert "results=/results" in entry and 'cd "$results" && exec python3 /app/train.py "$@"' in entry
    assert [a for i, a in instructions if i == "WORKDIR"][-1] == "/results"
    assert docker["BIONN_CACHE_DIR"].startswith("/results/")
    assert '--bind "$PWD/results:/results"' in sections["help"]


# --- The image, built and run ----------------------------------------------------------------------


def _container_problem() -> str | None:
    if os.geteuid() != 0:
        return "needs root (buildah builds and runs the image as root)"
    for tool in ("buildah", "debootstrap"):
        if not shutil.which(tool):
            return f"no `{tool}` on PATH (sudo bash scripts/container/setup.sh installs it)"
    return None


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kwargs)


def _checked(cmd: list[str], timeout: float = 1800) -> str:
    done = _run(cmd, timeout=timeout)
    assert done.returncode == 0, f"{shlex.join(cmd)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@dataclass
class Image:
    container: str  # a buildah working container of the image; every run below happens in it
    config: dict  # the image's OCI config (Entrypoint, WorkingDir, Env, User)

    def run(self, *args: str, results: Path | None, user: str = USER) -> subprocess.CompletedProcess:
        """The image's entry point with these arguments, like `docker run [-v RESULTS:/results] IMAGE ARGS`.

        `buildah run` ignores ENTRYPOINT and WORKDIR, so both come from the image's own config.
        """
        mount = ["-v", f"{results}:/results"] if results else []
        cmd = ["buildah", "run", "--isolation", "chroot", "--user", user, *mount,
               "--workingdir", self.config["WorkingDir"], self.container, "--",
               *self.config["Entrypoint"], *args]  # fmt: skip
        return _run(cmd, timeout=1200)

    def shell(self, script: str, user: str = USER) -> subprocess.CompletedProcess:
        return _run(["buildah", "run", "--isolation", "chroot", "--user", user, self.container, "--",
                     "sh", "-c", script])  # fmt: skip


def build_context(folder: Path) -> Path:
    """The files the Dockerfile copies (and the Dockerfile), in `folder`, every timestamp the same.

    buildah's layer cache tells COPY steps apart by file timestamps too: in a fresh clone every
    build would miss it, reinstalling TensorFlow. With fixed timestamps only the contents count.
    """
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ["Dockerfile", ".dockerignore", *copied_sources()]:
        source, target = ROOT / name, folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=ignore)
        else:
            shutil.copy2(source, target)
    for path in [folder, *folder.rglob("*")]:
        os.utime(path, (946684800, 946684800), follow_symlinks=False)  # 2000-01-01
    return folder


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Image:
    problem = _container_problem()
    if problem:
        if os.environ.get("BIONN_REQUIRE_CONTAINER") == "1":
            pytest.fail(f"BIONN_REQUIRE_CONTAINER=1 but {problem}")
        pytest.skip(problem)
    base = _checked(["bash", str(ROOT / "scripts/container/standin_base.sh")]).strip()
    previous = _run(["buildah", "inspect", "--type", "image", "--format", "{{.FromImageID}}", IMAGE])
    _checked(["buildah", "bud", "--isolation", "chroot", "--layers", "--pull-never",
              "--build-arg", f"BASE_IMAGE={base}", "--tag", IMAGE,
              str(build_context(tmp_path_factory.mktemp("context")))])  # fmt: skip
    built = _checked(["buildah", "inspect", "--type", "image", "--format", "{{.FromImageID}}", IMAGE]).strip()
    if previous.returncode == 0 and previous.stdout.strip() != built:
        _run(["buildah", "rmi", previous.stdout.strip()])  # the last run's image (layers stay as cache)
    info = json.loads(_checked(["buildah", "inspect", "--type", "image", IMAGE]))
    container = _checked(["buildah", "from", "--pull-never", IMAGE]).strip()
    try:
        yield Image(container, info["OCIv1"]["config"])
    finally:
        _run(["buildah", "rm", container])


def results_folder(path: Path, owner: str = USER) -> Path:
    """A folder on the host, like `mkdir results` by the user the container runs as."""
    path.mkdir()
    uid, gid = map(int, owner.split(":"))
    os.chown(path, uid, gid)
    return path


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def host_owner(path: Path) -> str:
    stat = path.stat()
    return f"{stat.st_uid}:{stat.st_gid}"


@pytest.mark.slow
@pytest.mark.container
def test_image_trains_and_sweeps_as_any_user_into_the_results_folder_on_the_host(image, tmp_path):
    results = results_folder(tmp_path / "results")

    trained = image.run(*QUICK, results=results)
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    (run,) = (results / "outputs").glob("*/*")
    assert read(run / "final_results.json")["status"] == "completed"
    assert (results / ".cache").is_dir()  # the statistics cache: BIONN_CACHE_DIR=/results/.cache
    assert {host_owner(p) for p in results.rglob("*")} == {USER}  # the files belong to the --user

    # Two jobs of model P (seconds each): the first training above already ran the default model E, whose
    # 74 MB model files made it the slower job of a `model=P,E` sweep.
    swept = image.run("-m", "hydra/launcher=local", "model=P", "runtime.seed=1,2", *QUICK, results=results)
    assert swept.returncode == 0, swept.stdout[-3000:] + swept.stderr[-3000:]
    (sweep,) = (results / "multirun").glob("*/*")
    for job in ("0", "1"):
        assert read(sweep / job / "final_results.json")["status"] == "completed"
    with open(sweep / "summary.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 and {row["status"] for row in rows} == {"completed"}, rows

    # Nothing written outside /results (on the host) and /tmp: the container's own layer holds only /tmp.
    # (overlay storage: the container's changes are the `diff` folder beside its mounted root)
    layer = Path(_checked(["buildah", "mount", image.container]).strip()).parent / "diff"
    try:
        assert layer.is_dir(), layer
        written = sorted(str(p.relative_to(layer)) for p in layer.rglob("*") if not p.is_dir())
    finally:
        _run(["buildah", "umount", image.container])
    assert all(p.startswith("tmp/") for p in written), written


@pytest.mark.slow
@pytest.mark.container
def test_image_refuses_to_run_without_a_writable_results_folder(image, tmp_path):
    message = "bionn: /results is not a writable folder mounted from the host"
    unmounted = image.run(*QUICK, results=None)
    assert unmounted.returncode == 2 and message in unmounted.stderr, unmounted.stderr
    assert "running as user 4321:4321" in unmounted.stderr
    read_only = results_folder(tmp_path / "results", owner="0:0")  # someone else's folder
    refused = image.run(*QUICK, results=read_only)
    assert refused.returncode == 2 and message in refused.stderr, refused.stderr
    assert not any(read_only.iterdir())
    # As root without a mount too: the run folders would otherwise vanish with the container.
    assert image.run(*QUICK, results=None, user="0:0").returncode == 2


@pytest.mark.slow
@pytest.mark.container
def test_image_reports_an_unknown_override_like_train_py_on_the_host(image, tmp_path):
    results = results_folder(tmp_path / "results")
    inside = image.run("no_such_key=1", results=results)
    outside = _run([sys.executable, str(ROOT / "train.py"), "no_such_key=1"], cwd=tmp_path, timeout=300)
    assert inside.returncode != 0 and outside.returncode != 0
    error = [line for line in outside.stderr.splitlines() if "no_such_key" in line]
    assert error and all(line in inside.stderr for line in error), (outside.stderr, inside.stderr)
    assert not any(results.iterdir())


# Run in the image: every distribution bionn needs there (its requirements, theirs, ..., with their
# markers and extras evaluated in the image), name -> installed version, and the image's marker
# environment. pip vendors `packaging`, so the image needs nothing more.
INSTALLED_CLOSURE = """
import json
from importlib.metadata import distribution
from pip._vendor.packaging.markers import default_environment
from pip._vendor.packaging.requirements import Requirement
from pip._vendor.packaging.utils import canonicalize_name

installed, todo = {}, [("bionn", frozenset())]
while todo:
    name, extras = todo.pop()
    if (name, extras) in installed:
        continue
    dist = distribution(name)
    installed[(name, extras)] = dist.version
    for req in map(Requirement, dist.requires or []):
        if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in extras | {""}):
            todo.append((canonicalize_name(req.name), frozenset(req.extras)))
versions = {name: version for (name, _), version in installed.items() if name != "bionn"}
print(json.dumps({"installed": versions, "environment": default_environment()}))
"""


@pytest.mark.slow
@pytest.mark.container
def test_image_installs_the_locked_versions(image):
    from test_pins import locked_versions

    found = image.shell(f"python3 -c {shlex.quote(INSTALLED_CLOSURE)}")
    assert found.returncode == 0, found.stderr[-3000:]
    inside = json.loads(found.stdout)
    locked = locked_versions(inside["environment"])
    assert {"tensorflow", "keras", "numpy", "hydra-core", "numba", "submitit"} <= set(inside["installed"])
    wrong = {
        name: f"{version} (locked {locked.get(name, 'not at all')})"
        for name, version in inside["installed"].items()
        if locked.get(name) != version
    }
    assert not wrong, f"the image's versions differ from requirements.lock: {wrong}"


@pytest.mark.slow
@pytest.mark.container
def test_image_carries_no_build_tools_or_caches(image):
    fresh = Image(_checked(["buildah", "from", "--pull-never", IMAGE]).strip(), image.config)
    try:
        tools = fresh.shell("for t in gcc cc g++ make; do command -v $t; done; true")
        # (/root/.cache stays as the empty mount point of the build's pip cache; /tmp/numba-cache holds
        # the data engine's compiled kernels on purpose, and nothing else may be in /tmp)
        caches = (
            "find /root/.cache /tmp -mindepth 1 -not -path '/tmp/numba-cache*';"
            " ls -d /app/build /app/*.egg-info /app/bionn /app/hydra_plugins 2>/dev/null; true"
        )
        leftovers = fresh.shell(caches, user="0:0")  # root: /root is not readable by others
        kernels = fresh.shell("find /tmp/numba-cache -name '*.nbi' -perm -o=w; stat -c %A /tmp/numba-cache")
    finally:
        _run(["buildah", "rm", fresh.container])
    assert tools.returncode == 0 and not tools.stdout.strip(), tools.stdout
    assert leftovers.returncode == 0 and not leftovers.stdout.strip(), leftovers.stdout
    # The kernels every run uses, compiled at build time, writable by any --user (another CPU adds its own)
    index = kernels.stdout.split()
    assert {"generate_serial", "generate_parallel", "_buffer_shuffle"} <= {
        Path(p).name.split(".")[1].rsplit("-", 1)[0] for p in index[:-1]
    }, kernels.stdout
    assert index[-1] == "drwxrwxrwx", kernels.stdout
    assert image.config.get("User", "") in ("", "root")  # no fixed user: whoever --user says
    assert "/results" not in (image.config.get("Volumes") or {})  # no anonymous volume takes run folders
