"""The Dockerfile and the Apptainer definition agree with the project (no container engine runs here;
README.md says what was checked and how)."""

from __future__ import annotations

import re
import tomllib

from conftest import ROOT


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
    assert "FROM tensorflow/tensorflow:${TF_VERSION}-gpu" in dockerfile
    for source, _destination in re.findall(r"^COPY (.+) (\S+)$", dockerfile, re.M):
        assert all((ROOT / name).exists() for name in source.split()), source
    assert 'ENTRYPOINT ["python3", "/app/train.py"]' in dockerfile and "COPY conf ./conf" in dockerfile


def test_apptainer_definition_runs_the_images_train_py_in_the_bound_results_folder():
    definition = (ROOT / "apptainer.def").read_text()
    sections = dict(re.findall(r"^%(\w+)\n(.*?)(?=^%|\Z)", definition, re.M | re.S))
    assert {"environment", "runscript", "test", "help"} <= set(sections)
    assert re.search(r"^Bootstrap: docker-archive\nFrom: bionn.tar$", definition, re.M)
    assert 'exec python3 /app/train.py "$@"' in sections["runscript"]
    assert "--nv" in definition and '--bind "$PWD/results:/results"' in definition
