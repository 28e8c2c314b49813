"""bionn-import: seed TOML to conf/, round trips through real Hydra composition, overwriting, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import ROOT
from conftest import composed as compose_conf
from omegaconf import OmegaConf

from bionn.config.checks import check_run
from bionn.config.dataset import DatasetConfig
from bionn.config.errors import ConfigError
from bionn.config.importer import escape_interpolations, main, plan_import, yaml_value
from bionn.config.schema import TrainingConfig, Verbosity

EXAMPLES = ROOT / "examples"
CONFIGS = EXAMPLES / "configurations.toml"
DATA = EXAMPLES / "data.toml"

SMALL_DATA = """
[dlocal]
[dlocal.shape]
n_samples = 400
batch_size = 16
"""

SMALL_CONFIG = """
[T]
[T.structure]
layers = [{ type = "Flatten" }, { type = "Dense", units = 12 }]
[T.dataset]
training = "dlocal"
"""


def composed(search_dir: Path, *overrides: str):
    """Compose conf/train.yaml with search_dir on the search path, as `--config-dir` does."""
    return compose_conf(*overrides, config_dir=search_dir)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def run_import(*args) -> int:
    return main([str(a) for a in args])


def files_under(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---- the seed files ----------------------------------------------------------------------


def test_committed_conf_is_exactly_what_the_importer_writes(tmp_path):
    plan = plan_import([CONFIGS, DATA], tmp_path)
    expected = {"model", "dataset", "training", "experiment"}
    assert {p.parent.name for p in plan} == expected
    assert {p.stem for p in plan if p.parent.name == "experiment"} == {"A", "E", "P", "P2"}
    assert {p.stem for p in plan if p.parent.name == "dataset"} == {"dtest", "dbig", "dmedium", "dsmall"}
    for path, text in plan.items():
        committed = ROOT / "conf" / path.relative_to(tmp_path)
        assert committed.read_text() == text, f"{committed} differs from the importer's output: re-import"


def test_output_is_deterministic_and_keeps_the_toml_comments(tmp_path):
    first = plan_import([CONFIGS, DATA], tmp_path)
    assert list(plan_import([CONFIGS, DATA], tmp_path).values()) == list(first.values())
    model_p = first[tmp_path / "model" / "P.yaml"]
    assert "# Configuration P: Simplified CNN configuration" in model_p
    assert "activation: relu}  # Reduced number of filters" in model_p
    assert "\n# Removed one Dense layer to simplify the model\n- {type: Dense, units: 12" in model_p
    dtest = first[tmp_path / "dataset" / "dtest.yaml"]
    assert "  # 'n_samples' is the total number of samples in your dataset.\n  n_samples: 5000\n" in dtest
    assert "  n_shards: 10  # Each shard will have 50 samples" in dtest
    assert first[tmp_path / "experiment" / "E.yaml"].startswith("# @package _global_\n")


def test_comments_go_to_the_entry_they_describe():
    from bionn.config.importer.reading import read_comments

    comments = read_comments(
        """# dropped: a blank line follows

# above T
[T]  # beside T
# above a.b
a.b = 1  # beside a.b
         # continues beside a.b
[T.x]
y = [  # beside y's bracket
  1,  # beside y[0]
  # above y[1]
  2,
]  # beside y
"""
    )
    assert comments.above == {
        ("T",): ["above T"],
        ("T", "a", "b"): ["above a.b"],
        ("T", "x", "y", 1): ["above y[1]"],
    }
    assert comments.trailing == {
        ("T",): ["beside T"],
        ("T", "a", "b"): ["beside a.b", "continues beside a.b"],
        ("T", "x", "y"): ["beside y", "beside y's bracket"],
        ("T", "x", "y", 0): ["beside y[0]"],
    }


def assert_toml_values_in(composed_value, toml_value, where=""):
    if isinstance(toml_value, dict):
        for key, value in toml_value.items():
            assert key in composed_value, f"{where}.{key} missing"
            assert_toml_values_in(composed_value[key], value, f"{where}.{key}")
    else:
        assert composed_value == toml_value, where
        assert type(composed_value) is type(toml_value) or isinstance(toml_value, int | float), where


@pytest.mark.parametrize("name", ["A", "E", "P", "P2"])
def test_composed_experiment_gives_back_every_toml_value(tmp_path, name):
    assert run_import(CONFIGS, DATA, "--out", tmp_path) == 0
    seed = tomllib.loads(CONFIGS.read_text())[name]
    data = tomllib.loads(DATA.read_text())[seed["dataset"]["training"]]
    cfg = composed(tmp_path, f"experiment={name}")
    check_run(cfg)
    run = OmegaConf.to_container(cfg, resolve=True)
    assert run["model"] == {"name": name, "vars": {}, "layers": seed["structure"]["layers"]}
    assert_toml_values_in(run["training"]["compile"], seed["compile"], "compile")
    assert_toml_values_in(run["training"], seed["training"], "training")
    assert run["training"]["use_stats_of"] == seed["dataset"]["use_stats_of"]
    assert run["dataset"]["name"] == seed["dataset"]["training"]
    assert_toml_values_in(run["dataset"], data, "dataset")


def test_dataset_keys_left_out_get_the_documented_defaults(tmp_path):
    assert run_import(DATA, "--out", tmp_path) == 0
    cfg = composed(tmp_path, "dataset=dsmall")
    defaults = OmegaConf.structured(DatasetConfig)
    assert "n_shards" not in (tmp_path / "dataset" / "dsmall.yaml").read_text()
    assert cfg.dataset.shape.n_shards == defaults.shape.n_shards == 1
    assert cfg.dataset.shape.shuffle_buffer_size == defaults.shape.shuffle_buffer_size
    assert cfg.dataset.simulation == defaults.simulation


# ---- overwriting -------------------------------------------------------------------------


def test_rerun_is_idempotent_and_edits_need_force(tmp_path, capsys):
    out = tmp_path / "conf"
    assert run_import(CONFIGS, DATA, "--out", out) == 0
    before = files_under(out)
    inodes = {p: p.stat().st_ino for p in out.rglob("*.yaml")}  # an atomic rewrite gets a new inode
    assert run_import(CONFIGS, DATA, "--out", out) == 0
    assert files_under(out) == before
    assert {p: p.stat().st_ino for p in out.rglob("*.yaml")} == inodes
    assert "0 created, 0 overwritten, 16 unchanged" in capsys.readouterr().out

    edited = out / "training" / "P.yaml"
    edited.write_text(edited.read_text().replace("epochs: 200", "epochs: 7"))
    (out / "model" / "A.yaml").unlink()
    assert run_import(CONFIGS, DATA, "--out", out) == 1
    assert str(edited) in capsys.readouterr().err
    assert "epochs: 7" in edited.read_text() and not (out / "model" / "A.yaml").exists()

    assert run_import(CONFIGS, DATA, "--out", out, "--dry-run") == 0
    shown = capsys.readouterr().out
    assert f"differs   {edited}" in shown and f"create    {out / 'model' / 'A.yaml'}" in shown
    assert "-epochs: 7\n+epochs: 200" in shown
    assert "epochs: 7" in edited.read_text() and not (out / "model" / "A.yaml").exists()

    assert run_import(CONFIGS, DATA, "--out", out, "--force") == 0
    assert files_under(out) == before


def test_dry_run_into_a_new_folder_writes_nothing(tmp_path, capsys):
    assert run_import(CONFIGS, DATA, "--out", tmp_path / "conf", "--dry-run") == 0
    assert capsys.readouterr().out.count("create ") == 16
    assert not (tmp_path / "conf").exists()


# ---- one file alone, edge cases ------------------------------------------------------------


def test_either_file_alone(tmp_path):
    out = tmp_path / "conf"
    assert run_import(write(tmp_path, "d.toml", SMALL_DATA), "--out", out) == 0
    assert files_under(out).keys() == {"dataset/dlocal.yaml"}
    # The dataset is now found in the output folder.
    assert run_import(write(tmp_path, "c.toml", SMALL_CONFIG), "--out", out) == 0
    assert files_under(out).keys() == {
        "dataset/dlocal.yaml",
        "model/T.yaml",
        "training/T.yaml",
        "experiment/T.yaml",
    }
    cfg = composed(out, "experiment=T")
    check_run(cfg)
    assert cfg.dataset.name == "dlocal" and cfg.dataset.shape.n_samples == 400


def test_missing_optional_sections_take_the_schema_defaults(tmp_path):
    text = '[M]\n[M.structure]\nlayers = [{ type = "Flatten" }, { type = "Dense", units = 12 }]\n'
    assert run_import(write(tmp_path, "c.toml", text), "--out", tmp_path) == 0
    assert "override /dataset" not in (tmp_path / "experiment" / "M.yaml").read_text()
    assert "compile" not in (tmp_path / "training" / "M.yaml").read_text()
    cfg = composed(tmp_path, "experiment=M")
    check_run(cfg)
    assert (
        cfg.training.name == "M"
        and cfg.training.epochs == TrainingConfig().epochs
        and cfg.training.compile.optimizer == "adam"
    )
    assert cfg.dataset.name == "dtest"  # train.yaml's default


def test_known_training_keys_are_carried(tmp_path):
    text = SMALL_CONFIG + (
        '[T.compile]\noptimizer = "sgd"\nlearning_rate = 0.25\nclipvalue = 0.5\n'
        "[T.training]\nepochs = 3\nearly_stopping_patience = 0\nverbose = 0\n"
    )
    paths = write(tmp_path, "c.toml", text), write(tmp_path, "d.toml", SMALL_DATA)
    assert run_import(*paths, "--out", tmp_path) == 0
    t = composed(tmp_path, "experiment=T").training
    assert (t.compile.optimizer, t.compile.learning_rate, t.compile.clipvalue) == ("sgd", 0.25, 0.5)
    assert (t.epochs, t.early_stopping_patience, t.verbose) == (3, 0, Verbosity.silent)


def test_empty_file_imports_nothing(tmp_path, capsys):
    assert run_import(write(tmp_path, "empty.toml", ""), "--out", tmp_path / "conf") == 0
    assert "0 created" in capsys.readouterr().out and not (tmp_path / "conf").exists()


def test_unicode_comments_and_values_survive(tmp_path):
    text = (
        "# Réseau ✓ für Kinetik\n[U]\n[U.structure]\nlayers = [\n"
        '  { type = "Flatten", name = "aplatir_é" },  # ñandú 🦤\n'
        '  { type = "Dense", units = 12, name = "tête" },\n]\n'
        '[U.dataset]\ntraining = "dlocal"\n'
    )
    paths = write(tmp_path, "c.toml", text), write(tmp_path, "d.toml", SMALL_DATA)
    assert run_import(*paths, "--out", tmp_path) == 0
    model = (tmp_path / "model" / "U.yaml").read_text(encoding="utf-8")
    assert model.startswith("# Réseau ✓ für Kinetik\n") and "# ñandú 🦤" in model
    cfg = composed(tmp_path, "experiment=U")
    assert [layer.get("name") for layer in cfg.model.layers] == ["aplatir_é", "tête"]


def test_interpolation_strings_stay_inert_data(tmp_path):
    text = SMALL_CONFIG.replace('{ type = "Flatten" }', '{ type = "Flatten", name = "${oc.env:HOME}" }')
    paths = write(tmp_path, "c.toml", text), write(tmp_path, "d.toml", SMALL_DATA)
    assert run_import(*paths, "--out", tmp_path) == 0
    assert r"'\${oc.env:HOME}'" in (tmp_path / "model" / "T.yaml").read_text()
    cfg = composed(tmp_path, "experiment=T")
    assert cfg.model.layers[0].name == "${oc.env:HOME}"
    assert OmegaConf.to_container(cfg, resolve=True)["model"]["layers"][0]["name"] == "${oc.env:HOME}"


@pytest.mark.parametrize(
    "text",
    [
        "${x}",
        "${oc.env:HOME}",
        r"\${x}",
        r"a\\${x}",
        r"a\b",
        "it's",
        "yes",
        "1.5",
        "null",
        "a: b, c",
        "tab\there",
    ],
)
def test_strings_come_back_exactly_through_yaml_and_omegaconf(text):
    cfg = OmegaConf.create(f"value: {yaml_value(escape_interpolations(text))}\n")
    assert cfg.value == text


@pytest.mark.parametrize("value", [0.1, -1.0, 1e-05, 1e16, 3, True, [0.7, 0.15, 0.15], {"a": [1, "b"]}])
def test_values_come_back_exactly(value):
    assert OmegaConf.to_container(OmegaConf.create(f"value: {yaml_value(value)}\n"))["value"] == value


# ---- bad input: a clear error and nothing written ----------------------------------------------


def config_with(**sections: str) -> str:
    base = {
        "structure": 'layers = [{ type = "Flatten" }, { type = "Dense", units = 12 }]',
        "dataset": 'training = "dlocal"',
    }
    base.update(sections)
    return "[T]\n" + "".join(f"[T.{name}]\n{body}\n" for name, body in base.items())


@pytest.mark.parametrize(
    "configs,data,message",
    [
        ("[T\nx = 1", SMALL_DATA, r"c\.toml: invalid TOML: .*\(at line 1, column 3\)"),
        (config_with(), "[d]\nshape = 3\n", r"d\.toml: top-level|shape = 3 must be a table"),
        (
            config_with(structure='layers = [{ type = "Dense2", units = 12 }]'),
            SMALL_DATA,
            r"\[T\.structure\] layers\[0\]: unknown layer type 'Dense2'; did you mean Dense",
        ),
        (
            config_with(structure='layers = [{ type = "Flatten" }, { type = "Dense", unit = 12 }]'),
            SMALL_DATA,
            r"layers\[1\] \(Dense\): unknown argument 'unit'; valid: units",
        ),
        (config_with(structure="layers = []"), SMALL_DATA, r"layers must be a non-empty list"),
        (
            config_with(dataset='training = "dnowhere"'),
            SMALL_DATA,
            r"\[T\.dataset\]: training = 'dnowhere' is neither a dataset .*known: dlocal",
        ),
        (
            config_with(),
            SMALL_DATA + "[dlocal.parameters]\nk1_min = 0.5\nk1_max = 0.1\n",
            r"d\.toml \[dlocal\]: dataset\.parameters\.k1_min = 0\.5 is invalid: must be <= .*k1_max",
        ),
        (
            config_with(),
            SMALL_DATA + "splits = [0.5, 0.2, 0.2]\n",
            r"dataset\.shape\.splits = \[0\.5, 0\.2, 0\.2\] is invalid: .*summing to 1",
        ),
        (
            config_with(),
            SMALL_DATA + "n_samplez = 3\n",
            r"d\.toml \[dlocal\.shape\]: unknown key 'n_samplez'; allowed: seed, n_samples",
        ),
        (config_with(), SMALL_DATA + 'seed = "many"\n', r"d\.toml \[dlocal\]: dataset\.shape\.seed"),
        (
            config_with(training="epochs = 3\nbatch = 5"),
            SMALL_DATA,
            r"c\.toml \[T\.training\]: unknown key 'batch'; allowed: epochs, save_interval, use_stats_of",
        ),
        (config_with(training='epochs = "abc"'), SMALL_DATA, r"training\.epochs"),
        (config_with(training="epochs = 0"), SMALL_DATA, r"training\.epochs = 0 is invalid: must be >= 1"),
        (config_with(extra="x = 1"), SMALL_DATA, r"\[T\]: unknown key 'extra'; allowed: structure, compile"),
        (config_with().replace("[T", '["a/b"'), SMALL_DATA, r"a/b.*not a valid config name"),
        (config_with().replace("[T", '["my net"'), SMALL_DATA, r"'my net' is not a valid config name"),
        (config_with(), SMALL_DATA.replace("dlocal", '"../up"'), r"'\.\./up' is not a valid config name"),
        (config_with().replace("[T", "[_target_"), SMALL_DATA, r"'_target_' is not a valid config name"),
        (
            config_with(structure='layers = [{ type = "Flatten", _target_ = "os.system" }]'),
            SMALL_DATA,
            r"key '_target_' starts with '_'",
        ),
        (config_with(structure='layers = [{ type = "Flatten", name = "???" }]'), SMALL_DATA, r"'\?\?\?'"),
        ('title = "nets"\n' + config_with(), SMALL_DATA, r"top-level key 'title' = 'nets' is not a table"),
        (config_with() + SMALL_DATA, SMALL_DATA, r"mixes configurations .* and datasets"),
    ],
)
def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, capsys, configs, data, message):
    paths = write(tmp_path, "c.toml", configs), write(tmp_path, "d.toml", data)
    with pytest.raises(ConfigError, match=message):
        plan_import(list(paths), tmp_path / "conf")
    assert run_import(*paths, "--out", tmp_path / "conf") == 2
    assert "bionn-import: error:" in capsys.readouterr().err
    assert not (tmp_path / "conf").exists()


def test_a_name_defined_twice_is_an_error(tmp_path):
    paths = write(tmp_path, "d1.toml", SMALL_DATA), write(tmp_path, "d2.toml", SMALL_DATA)
    with pytest.raises(ConfigError, match=r"dataset 'dlocal' is also defined in .*d1\.toml"):
        plan_import(list(paths), tmp_path / "conf")


def test_not_utf8_and_missing_files(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"# \xff\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        plan_import([bad], tmp_path)
    with pytest.raises(ConfigError, match="no such file"):
        plan_import([tmp_path / "nope.toml"], tmp_path)


# ---- end to end ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_imported_configs_train_with_config_dir(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    cli = Path(sys.executable).with_name("bionn-import")
    done = subprocess.run(
        [cli, CONFIGS, DATA, "--out", tmp_path / "conf"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    command = [
        sys.executable,
        "train.py",
        f"--config-dir={tmp_path / 'conf'}",
        "experiment=P",
        "debug=quick",
        f"runtime.stats_cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "run" / "final_results.json").read_text())
    assert results["status"] == "completed"
