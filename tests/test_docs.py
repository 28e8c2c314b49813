"""The documentation lives in the repository: generated parts are fresh, links and their anchors
resolve, every path and `bionn.x.y` the docs name exists, nothing cites a file outside the repository,
the README stays short."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys

from conftest import ROOT

DOCS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md", ROOT / "BENCHMARKS.md"]
# A path of the repository as the docs write it: under one of its folders, or one of its top-level files.
REPO_PATH = re.compile(
    r"(?<![\w/.$-])((?:bionn|scripts|conf|tests|docs|hydra_plugins|examples)/[\w./-]*[\w/]"
    r"|train\.py|Dockerfile|apptainer\.def|pyproject\.toml|requirements\.lock|BENCHMARKS\.md)(?![\w<*{])"
)
# Files the docs tell a user to create (examples, not parts of the repository).
USER_FILES = {"conf/hydra/launcher/mycluster.yaml"}


def test_configuration_reference_is_generated_from_the_schema():
    done = subprocess.run(
        [sys.executable, "scripts/gen_config_docs.py", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_readme_is_short_and_starts_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    setup = text.index("bash scripts/setup.sh && .venv/bin/python train.py")
    assert setup < text.index("bash scripts/test.sh") < text.index("\n## ", text.index("\n## ") + 1)


def anchors(doc) -> set[str]:
    """GitHub's anchors of a Markdown file's headings: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
    titles = re.findall(r"^#+ +(.+?) *$", text, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-") for title in titles}


def test_relative_links_and_their_anchors_resolve():
    broken = []
    for doc in DOCS:
        for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", doc.read_text()):
            if "://" in target:
                continue
            path = (doc.parent / target).resolve() if target else doc
            if not path.exists():
                broken.append(f"{doc.relative_to(ROOT)} -> {target}")
            elif anchor and path.suffix == ".md" and anchor not in anchors(path):
                broken.append(f"{doc.relative_to(ROOT)} -> {target}#{anchor}")
    assert not broken


def test_every_path_the_docs_name_exists():
    missing = [
        f"{doc.relative_to(ROOT)}: {path}"
        for doc in DOCS
        for path in sorted(set(REPO_PATH.findall(doc.read_text())))
        if path not in USER_FILES and not (ROOT / path).exists()
    ]
    assert not missing


def test_every_bionn_name_the_docs_cite_exists():
    """`bionn.baseline.label_ceiling`: a module, or an attribute of the longest importable module."""
    missing = []
    for doc in DOCS:
        for name in sorted(set(re.findall(r"`(bionn(?:\.\w+)+)`", doc.read_text()))):
            parts = name.split(".")
            for cut in range(len(parts), 0, -1):
                try:
                    found = importlib.import_module(".".join(parts[:cut]))
                    break
                except ImportError:
                    continue
            for attribute in parts[cut:]:
                found = getattr(found, attribute, None)
            if found is None:
                missing.append(f"{doc.relative_to(ROOT)}: {name}")
    assert not missing


def test_nothing_cites_a_file_outside_the_repository():
    outside = re.compile(r"DATA_MODEL\.md|\.\./shared|shared/seed|README\.seed")
    tops = [p for p in ROOT.iterdir() if p.name not in (".venv", ".git") and not p.name.endswith(".egg-info")]
    files = [f for top in tops for f in (top.rglob("*") if top.is_dir() else [top])]
    found = [
        str(p.relative_to(ROOT))
        for p in files
        if p.suffix in (".py", ".md", ".yaml", ".toml", ".sh", ".def")
        and p != ROOT / "tests" / "test_docs.py"
        and outside.search(p.read_text(errors="replace"))
    ]
    assert not found
