"""The documentation lives in the repository: generated parts are fresh, links resolve,
nothing cites a file outside the repository, the README stays short."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import ROOT

DOCS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md", ROOT / "BENCHMARKS.md"]
# Documents other branches add (containers, accuracy): links to them may run ahead of the merge.
PENDING = {"docs/containers.md", "docs/accuracy.md"}


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


def test_relative_links_resolve():
    broken = []
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if "://" in target:
                continue
            path = (doc.parent / target).resolve()
            if not path.exists() and str(path.relative_to(ROOT)) not in PENDING:
                broken.append(f"{doc.relative_to(ROOT)} -> {target}")
    assert not broken


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
