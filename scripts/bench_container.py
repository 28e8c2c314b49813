"""What the container tests cost: python scripts/bench_container.py [--cold] --json

Runs the container tests (`pytest -m container tests/test_containers.py`, as scripts/test.sh does)
and reports their wall time, their CPU time (less noisy than wall time on a shared machine), pytest's
per-phase durations (the image build is the setup of the first test), the image size and the CPU.
Needs what the tests need: root and buildah (scripts/container/setup.sh). --cold first removes every
cache: the stand-in base's tarball, the bionn images and the build's layer cache, so the run downloads
Debian and the Python dependencies again. Without it, the caches of the last run are used: with the
code unchanged, or with only the code changed (the dependencies' layer is keyed by pyproject.toml
and requirements.lock alone). The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("BIONN_CONTAINER_CACHE", "/var/cache/bionn"))


def buildah(*args: str) -> str:
    return subprocess.run(["buildah", *args], capture_output=True, text=True).stdout


def remove_caches() -> None:
    for tarball in CACHE.glob("standin-*.tar"):
        tarball.unlink()
    names = [n for n in buildah("images", "--format", "{{.Repository}}:{{.Tag}}").split() if "/bionn" in n]
    if names:
        buildah("rmi", "--force", *names)
    buildah("rmi", "--prune")  # the build's intermediate layers (only the bionn builds use buildah here)
    shutil.rmtree("/var/tmp/buildah-cache", ignore_errors=True)  # RUN --mount=type=cache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true", help="remove every cache first")
    parser.add_argument("--json", action="store_true", help="(the JSON line is always printed last)")
    args = parser.parse_args()
    if args.cold:
        remove_caches()
    env = {**os.environ, "BIONN_REQUIRE_CONTAINER": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "container", "--durations=0", "-p", "no:cacheprovider"]
    start = time.perf_counter()
    done = subprocess.run(
        [*cmd, "tests/test_containers.py"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_seconds = children.ru_utime + children.ru_stime
    print(done.stdout[-4000:], done.stderr[-2000:], sep="\n", file=sys.stderr)
    phases = {
        f"{phase} {test}": float(seconds)
        for seconds, phase, test in re.findall(
            r"^([\d.]+)s (setup|call|teardown)\s+\S+::(\w+)", done.stdout, re.M
        )
    }
    images = json.loads(buildah("images", "--json", "localhost/bionn:test") or "[]")
    cpu = re.search(
        r"^Model name:\s+(.+)$", subprocess.run(["lscpu"], capture_output=True, text=True).stdout, re.M
    )
    result = {
        "cold": args.cold,
        "passed": done.returncode == 0,
        "wall_s": round(wall, 1),
        "phases_s": phases,
        "cpu_s": round(cpu_seconds, 1),  # pytest and its children
        "image_size": images[0]["size"] if images else None,
        "cpu": cpu.group(1) if cpu else None,
        "cores": os.cpu_count(),
    }
    print(json.dumps(result))
    sys.exit(done.returncode)


if __name__ == "__main__":
    main()
