"""Imports run one way: bionn.config (the bottom floor) and the report load no engine or model code, data
and model do not import each other;
bionn.config rejects bad choices at composition and names the config files Hydra actually used."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, composed

from bionn.config.checks import check_run
from bionn.config.dataset import load_dataset_config
from bionn.config.errors import ConfigError

HEAVY = ("numba", "tensorflow", "keras", "bionn.data", "bionn.nn", "bionn.train")


def modules_loaded_by(code: str) -> list[str]:
    """Which HEAVY modules a fresh interpreter has loaded after running code."""
    probe = f"{code}\nimport sys\nprint('LOADED', *(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()[-1].split()[1:]


def bionn_imports(package: str) -> set[str]:
    """Every bionn module that the source files of bionn/<package>/ import (at any depth of the code)."""
    import ast

    found = set()
    for path in (ROOT / "bionn" / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            found |= {n for n in names if n.split(".")[0] == "bionn"}
    return found


def test_bionn_config_imports_no_other_bionn_code_but_the_atomic_writers():
    found = bionn_imports("config")
    assert {n for n in found if not n.startswith("bionn.config")} <= {"bionn.io"}


def test_data_knows_no_model_and_the_model_knows_no_data_engine():
    assert {n for n in bionn_imports("data") if n.startswith(("bionn.nn", "bionn.train"))} == set()
    assert {n for n in bionn_imports("nn") if n.startswith(("bionn.data", "bionn.train"))} == set()


def test_importing_bionn_config_loads_neither_numba_nor_tensorflow():
    code = (
        "import bionn.config.schema, bionn.config.dataset, bionn.config.checks, bionn.config.importer, "
        "bionn.config.tree, bionn.config.compose"
    )
    assert modules_loaded_by(code) == []


def test_composing_and_checking_a_run_loads_neither_numba_nor_tensorflow():
    code = (
        "from bionn.config.compose import compose_run\n"
        "from bionn.config.checks import check_run\n"
        "check_run(compose_run('experiment=P2', with_hydra=True))"
    )
    assert modules_loaded_by(code) == []


def test_bionn_import_loads_no_tensorflow(tmp_path):
    code = (
        "from bionn.config.importer import main\n"
        f"assert main(['examples/configurations.toml', 'examples/data.toml', '--out', '{tmp_path}']) == 0"
    )
    assert modules_loaded_by(code) == []
    assert (tmp_path / "model" / "P2.yaml").is_file()


@pytest.mark.parametrize(
    "override,allowed",
    [
        ("dataset.simulation.mechanism=michaelis", r"\[textbook, legacy\]"),
        ("dataset.simulation.svd_sign=up", r"\[first_positive, max_abs_positive, solver\]"),
    ],
)
def test_a_bad_choice_is_rejected_at_composition_with_the_allowed_values(override, allowed):
    key, value = override.split("=")
    with pytest.raises(Exception) as caught:
        composed(override)
    text = f"{caught.value} {caught.value.__cause__}"
    assert key in text and f"'{value}'" in text
    assert re.search(allowed, text), text


def test_a_bad_choice_in_a_dataset_file_names_the_file(tmp_path):
    path = tmp_path / "d.yaml"
    path.write_text("name: d\nsimulation:\n  mechanism: michaelis\n")
    with pytest.raises(ConfigError, match=rf"{path}: dataset\.simulation\.mechanism: .*textbook, legacy"):
        load_dataset_config(path)


def renamed_dataset_folder(tmp_path):
    """A --config-dir holding dtest's file under another option name (its name key still says dtest)."""
    (tmp_path / "dataset").mkdir()
    text = (ROOT / "conf" / "dataset" / "dtest.yaml").read_text()
    (tmp_path / "dataset" / "mine.yaml").write_text(text.replace("k1_min: 0.01", "k1_min: 9.0"))
    return tmp_path


def test_errors_name_the_file_hydra_used_with_config_dir_and_a_renamed_option(tmp_path):
    extra = renamed_dataset_folder(tmp_path)
    cfg = composed("dataset=mine", config_dir=extra, with_hydra=True)
    assert cfg.dataset.name == "dtest"
    with pytest.raises(  # the file and the line that set the value
        ConfigError, match=rf"^{extra / 'dataset' / 'mine.yaml'}:4: dataset\.parameters\.k1_min"
    ):
        check_run(cfg)


@pytest.mark.parametrize(
    ("overrides", "source", "key"),
    [
        (["training.epochs=0"], "training.epochs=0", r"training\.epochs = 0"),
        (["dataset.parameters.k1_min=0.9"], "dataset.parameters.k1_min=0.9", r"dataset\.parameters\.k1_min"),
        (
            ["model=P", "model.layers=[{type: Dense2}]"],
            "model.layers=[{type: Dense2}]",
            r"model\.layers\[0\]",
        ),
    ],
)
def test_an_error_names_the_command_line_override_that_set_the_value(overrides, source, key):
    cfg = composed(*overrides, with_hydra=True)
    with pytest.raises(ConfigError, match=rf"^the command-line override {re.escape(source)}: {key}"):
        check_run(cfg)


def test_the_source_of_a_value_is_the_experiment_file_that_sets_it_else_its_group_file():
    from bionn.config.sources import source_of

    hydra = composed("experiment=TR", with_hydra=True).hydra
    experiment = ROOT / "conf" / "experiment" / "TR.yaml"
    assert source_of("dataset.shape.batch_size", hydra) == f"{experiment}:10"
    assert source_of("dataset.parameters.k1_min", hydra).startswith(
        f"{ROOT / 'conf' / 'dataset' / 'dmedium.yaml'}:"
    )
    assert source_of(
        "dataset.shape.batch_size",
        composed("experiment=TR", "dataset.shape.batch_size=64", with_hydra=True).hydra,
    ) == ("the command-line override dataset.shape.batch_size=64")


def test_train_py_names_the_renamed_file_from_config_dir(tmp_path):
    extra = renamed_dataset_folder(tmp_path)
    command = [
        sys.executable,
        "train.py",
        f"--config-dir={extra}",
        "dataset=mine",
        f"hydra.run.dir={tmp_path}/r",
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    output = done.stderr + done.stdout
    assert f"{extra / 'dataset' / 'mine.yaml'}:4: dataset.parameters.k1_min = 9.0" in output
    assert "Traceback" not in output and not (tmp_path / "r" / "ledger.json").exists()


def test_the_report_and_the_run_folder_import_no_training_code():
    assert modules_loaded_by("import bionn.report, bionn.run_folder, bionn.report.cli") == []


def test_run_records_load_no_data_engine_when_they_write_a_ledger_and_an_attempt(tmp_path):
    code = (
        "from bionn.run_folder import Outcome, RunFolder\n"
        f"folder = RunFolder({str(tmp_path / 'run')!r}); folder.path.mkdir()\n"
        "folder.write_ledger({'a': 1}); folder.check_ledger({'a': 1})\n"
        "folder.begin_attempt(None); folder.end_attempt(Outcome.COMPLETED)"
    )
    assert modules_loaded_by(code) == []
    assert {n for n in bionn_imports("run_folder") if n.startswith("bionn.data")} == set()


def test_nn_knows_no_run_folder_layout():
    assert {n for n in bionn_imports("nn") if n.startswith("bionn.run_folder")} == set()


def imports_of(folder: str) -> dict[str, set[str]]:
    """Every module (top-level package or dotted name) each source file under ROOT/folder imports, at any
    depth of its code: {path relative to ROOT: names}."""
    import ast

    found = {}
    for path in (ROOT / folder).rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            names |= {a.name for a in node.names} if isinstance(node, ast.Import) else set()
            names |= {node.module} if isinstance(node, ast.ImportFrom) and node.module else set()
        found[str(path.relative_to(ROOT))] = names
    return found


def test_no_bionn_module_imports_a_hydra_plugin():
    offenders = {
        p: n for p, n in imports_of("bionn").items() if any(m.startswith("hydra_plugins") for m in n)
    }
    assert offenders == {}


def test_search_and_report_do_not_import_each_other_both_ways():
    """The report reads a search (bionn.search's folder and schema); bionn.search never imports the report."""
    offenders = {
        p: {m for m in n if m.startswith("bionn.report")} for p, n in imports_of("bionn/search").items()
    }
    assert {p: n for p, n in offenders.items() if n} == {}
    assert any(m.startswith("bionn.search") for n in imports_of("bionn/report").values() for m in n)


def test_the_sweep_modules_import_no_hydra():
    """The launchers' decisions (resume, liveness, arrays, failures): plain modules, tested without Hydra."""
    sweep = {p: n for p, n in imports_of("bionn").items() if Path(p).name.startswith("sweep")}
    assert len(sweep) >= 6, sorted(sweep)
    assert {
        p: {m for m in n if m.split(".")[0] == "hydra"}
        for p, n in sweep.items()
        if any(m.split(".")[0] == "hydra" for m in n)
    } == {}


def test_no_module_over_400_lines_and_no_function_over_60():
    import ast

    long_files, long_functions = [], []
    for folder in ("bionn", "hydra_plugins"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            name = str(path.relative_to(ROOT))
            if len(text.splitlines()) > 400:
                long_files.append(name)
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    if node.end_lineno - node.lineno + 1 > 60:
                        long_functions.append(f"{name}:{node.lineno} {node.name}")
    assert (long_files, long_functions) == ([], [])
