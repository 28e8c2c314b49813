"""A finished run as a model people use: the self-contained inference models (bionn.nn.inference),
bionn-predict, bionn-evaluate, provenance and the data engine's version in the ledger.

One real training (model TR with its Residual blocks, the relative label, 3 epochs of a tiny dataset)
is shared by the module (the tests that use it are slow); the commands run in fresh processes where
the point is a fresh process."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, composed
from omegaconf import OmegaConf

from bionn.config.errors import ConfigError
from bionn.config.schema import OnConfigChange
from bionn.rsquared import RSquaredSums
from bionn.run_folder import ConfigChanged, RunFolder

BIN = Path(sys.executable).parent


TRAINED = (
    "model=TR",
    "model.vars.width=32",
    "model.vars.blocks=1",
    "dataset.label=relative",
    "debug=quick",
    "training.epochs=3",
    "training.verbose=silent",
    "training.save_interval=0",
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(run folder, statistics cache) of a finished 3-epoch run."""
    from bionn.train import run

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    root = tmp_path_factory.mktemp("trained")
    run(composed(*TRAINED, f"runtime.stats_cache_dir={root / 'cache'}"), root / "run")
    return root / "run", root / "cache"


def _r2(labels: np.ndarray, predicted: np.ndarray) -> dict:
    sums = RSquaredSums(labels.shape[1])
    sums.update(labels, predicted)
    return sums.summary()


def _files(folder: Path) -> dict[str, float]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_a_finished_run_keeps_statistics_best_weights_inference_models_and_provenance(trained):
    run_dir, _ = trained
    folder = RunFolder(run_dir)
    final = folder.final()
    val = folder.history()["val_loss"]
    assert final["best_epoch"] == folder.best.state()["epoch"] == 1 + int(np.argmin(val))
    assert folder.best.state()["val_loss"] == pytest.approx(min(val))
    assert [p.name for p in (run_dir / "best").glob("*.h5")] == [f"epoch_{final['best_epoch']}.weights.h5"]
    for name in ("statistics.npz", "inference_best.keras", "inference_last.keras"):
        assert (run_dir / name).is_file()
    provenance = folder.info()["provenance"]
    assert provenance["engine_version"] == folder.ledger()["engine_version"] == 2
    assert provenance["git"]["commit"] and provenance["libraries"]["tensorflow"].startswith("2.21")
    assert folder.attempts()[0]["provenance"] == provenance


@pytest.mark.slow
def test_generate_then_predict_in_a_fresh_process_without_the_cache_reproduces_the_test_evaluation(
    trained, tmp_path
):
    run_dir, cache = trained
    info = RunFolder(run_dir).info()
    dataset = tmp_path / "dataset.yaml"
    dataset.write_text(OmegaConf.to_yaml(OmegaConf.create(info["config"]["dataset"])))
    lo, hi = info["data"]["splits"]["test"]
    samples = tmp_path / "test.npz"
    subprocess.run(
        [
            BIN / "bionn-generate",
            "--dataset",
            dataset,
            "--split",
            "test",
            "--count",
            str(hi - lo),
            "--out",
            samples,
        ],
        check=True,
        capture_output=True,
    )
    shutil.rmtree(cache)  # the run folder alone must do
    env = {**os.environ, "BIONN_CACHE_DIR": str(tmp_path / "no-cache")}
    out = tmp_path / "predicted.csv"
    done = subprocess.run(
        [BIN / "bionn-predict", run_dir, samples, "--which", "last", "--out", out],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "abs_* = relative x (E0 + S0)" in done.stdout
    assert not (tmp_path / "no-cache").exists()
    rows = list(csv.DictReader(out.open()))
    names = [f"c{j}_{s}" for j in (1, 2, 3) for s in ("E", "S", "ES", "P")]
    assert list(rows[0]) == ["sample", "E0", "S0", *names, *(f"abs_{n}" for n in names)]
    predicted = np.array([[float(r[n]) for n in names] for r in rows])
    absolute = np.array([[float(r[f"abs_{n}"]) for n in names] for r in rows])
    with np.load(samples) as data:
        labels, total = data["labels"], data["E0"] + data["S0"]
    np.testing.assert_allclose(absolute, predicted * total[:, None], rtol=1e-12)
    test = RunFolder(run_dir).final()["evaluation"]["test"]
    got = _r2(labels, predicted)
    assert got["r_squared"] == pytest.approx(test["r_squared"], abs=1e-5)
    np.testing.assert_allclose(got["r2_per_output"], test["r2_per_output"], atol=1e-5)

    # Plain Keras: without bionn's classes it fails naming them; `import bionn.nn` is all it needs.
    script = f"""
import keras, numpy as np
path = {str(run_dir / "inference_last.keras")!r}
try:
    keras.saving.load_model(path)
except Exception as err:
    print("PLAIN:", err)
import bionn.nn
plain = keras.saving.load_model(path)
import bionn
ours = bionn.load_model({str(run_dir)!r}, "last")
features = np.load({str(samples)!r})["features"]
print("EQUAL:", np.array_equal(plain.predict(features, verbose=0), ours.predict(features, verbose=0)))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert "EQUAL: True" in done.stdout
    assert "bionn.nn" in done.stdout.split("PLAIN:")[1]


@pytest.mark.slow
def test_evaluate_on_a_wider_dataset_writes_its_evaluation_and_nothing_else(trained, capsys, tmp_path):
    from bionn.evaluate import main

    run_dir, _ = trained
    before = _files(run_dir)
    assert main([str(run_dir), "dataset.parameters.k1_max=0.1", "dataset.shape.seed=7"]) == 0
    after = _files(run_dir)
    added = set(after) - set(before)
    assert added == {"evaluation_k1_max=0.1,shape.seed=7.json"}
    assert {k: after[k] for k in before} == before
    result = json.loads((run_dir / added.pop()).read_text())
    assert result["which"] == "best" and result["samples"] == 96
    assert result["dataset"]["parameters"]["k1_max"] == 0.1
    assert len(result["r2_per_output"]) == 12 and -10 < result["r2_mean"] <= 1
    assert result["reference"]["ridge_r2_mean"] is not None
    assert result["reference"]["ceiling_r2_mean"] == pytest.approx(1.0)
    assert result["beyond_training_ranges"] == ["k1 0.01-0.1 (trained on 0.01-0.05)"]
    out = capsys.readouterr().out
    assert "ridge r2_mean" in out and "extrapolation: k1 0.01-0.1 (trained on 0.01-0.05)" in out

    from bionn.report import write_report

    jobs, text = write_report(run_dir, out=tmp_path, baseline=None)  # the report lists the evaluation
    section = text[text.index("## Evaluations on other datasets") :]
    assert f"| run | k1_max=0.1,shape.seed=7 | best    | 96      | {result['r2_mean']:.4g}" in section

    # --config-dir and a dataset by name, the options before or after the run folder: the same evaluation
    conf = tmp_path / "conf"
    (conf / "dataset").mkdir(parents=True)
    (conf / "dataset" / "wider.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(result["dataset"])))
    orders = {
        "after": [str(run_dir), "--config-dir", str(conf), "dataset=wider", "--name", "after"],
        "before": ["--config-dir", str(conf), "--name", "before", str(run_dir), "dataset=wider"],
    }
    for name, argv in orders.items():
        assert main(argv) == 0, capsys.readouterr().err
        again = json.loads((run_dir / f"evaluation_{name}.json").read_text())
        assert (again["r2_mean"], again["samples"]) == (result["r2_mean"], 96), name
    capsys.readouterr()
    assert main([str(run_dir), "dataset.shape.seed=8", "--name", "inside"]) == 0  # the trained ranges
    inside = json.loads((run_dir / "evaluation_inside.json").read_text())
    assert inside["beyond_training_ranges"] == [] and "extrapolation" not in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("dataset.simulation.n_times=101", "dataset.simulation.n_times = 101 (the model of"),
        ("dataset.label=seed", "dataset.label = seed (the model of"),
        ("dataset.parameters.k1_max=-1", "k1_max"),
        ("training.epochs=3", "only dataset or dataset.<key> can change"),
    ],
)
def test_evaluate_refuses_a_dataset_the_model_cannot_take_and_writes_nothing(
    trained, capsys, override, message
):
    from bionn.evaluate import main

    run_dir, _ = trained
    before = _files(run_dir)
    assert main([str(run_dir), override]) == 2
    err = capsys.readouterr().err
    assert message in err and "nothing was written" in err
    assert _files(run_dir) == before


def _write_matrix(path: Path, matrix: np.ndarray) -> Path:
    if path.suffix == ".npz":
        np.savez(path, absorbance=matrix)
    else:
        np.savetxt(path, matrix, delimiter=",")
    return path


@pytest.mark.slow
def test_predict_refuses_bad_input_naming_expected_and_given_and_writes_nothing(trained, tmp_path, capsys):
    from bionn.predict import main

    run_dir, _ = trained
    good = np.random.default_rng(0).uniform(0.1, 1.0, (501, 4))
    nan = good.copy()
    nan[7, 2] = np.nan
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    cases = {
        _write_matrix(
            tmp_path / "short.csv", good[:100]
        ): "absorbance has shape (1, 100, 4); the run's dataset takes (501, 4)",
        _write_matrix(tmp_path / "wide.npz", np.ones((2, 501, 5))): "absorbance has shape (2, 501, 5)",
        _write_matrix(
            tmp_path / "nan.npz", nan
        ): "1 NaN or infinite value(s) (the first at sample 0, time point 7, wavelength 2)",
        _write_matrix(tmp_path / "zero.csv", np.zeros((501, 4))): "sample 0 is all zeros",
        empty: "the file is empty; expected an absorbance matrix of shape (501, 4)",
        tmp_path / "missing.npz": "no such file",
    }
    for path, message in cases.items():
        assert main([str(run_dir), str(path)]) == 2, path
        err = capsys.readouterr().err
        assert message in err and "nothing was written" in err, err
    assert main([str(run_dir), str(tmp_path / "short.csv"), "--e0", "0.1"]) == 2
    assert not list(tmp_path.glob("*.predictions.csv"))

    # a single CSV matrix (with a header line) works; the relative label's note says how to go absolute
    matrix = tmp_path / "measured.csv"
    matrix.write_text("a,b,c,d\n" + "\n".join(",".join(map(str, row)) for row in good))
    assert main([str(run_dir), str(matrix)]) == 0
    assert "absolute = relative x (E0 + S0)" in capsys.readouterr().out
    assert len(list(csv.DictReader((tmp_path / "measured.csv.predictions.csv").open()))) == 1

    # a finite matrix whose Frobenius norm overflows (values near 1e308): no warning, the same predictions
    # as the matrix scaled down
    huge = _write_matrix(tmp_path / "huge.npz", good * 1.7e308)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert main([str(run_dir), str(huge)]) == 0, capsys.readouterr().err
    assert "RuntimeWarning" not in capsys.readouterr().err
    rows = [
        list(csv.DictReader((tmp_path / f"{n}.predictions.csv").open())) for n in ("measured.csv", "huge.npz")
    ]
    np.testing.assert_allclose(
        [float(v) for v in rows[1][0].values()], [float(v) for v in rows[0][0].values()], rtol=1e-6
    )


@pytest.mark.slow
def test_no_model_another_engine_or_an_older_bionn_is_refused(trained, tmp_path, capsys):
    from bionn.predict import main

    run_dir, _ = trained
    matrix = _write_matrix(tmp_path / "m.csv", np.ones((501, 4)))
    unfinished = tmp_path / "unfinished"
    shutil.copytree(run_dir, unfinished, ignore=shutil.ignore_patterns("inference_*", "final_results.json"))
    older = tmp_path / "older"
    shutil.copytree(run_dir, older, ignore=shutil.ignore_patterns("inference_*"))
    info = json.loads((older / "info.json").read_text())
    del info["provenance"]
    (older / "info.json").write_text(json.dumps(info))
    other_engine = tmp_path / "engine"
    shutil.copytree(run_dir, other_engine)
    info = json.loads((other_engine / "info.json").read_text())
    info["provenance"]["engine_version"] = 1
    (other_engine / "info.json").write_text(json.dumps(info))
    cases = {
        tmp_path / "nothing": "no such run folder",
        unfinished: "expected inference_best.keras (written when a run finishes), found none: the run has "
        "not finished",
        older: "written by a bionn older than the inference models",
        other_engine: "trained on data of engine version 1 (info.json provenance.engine_version); this "
        "bionn generates version 2",
    }
    for folder, message in cases.items():
        assert main([str(folder), str(matrix)]) == 2
        assert message in capsys.readouterr().err
    assert not list(tmp_path.glob("*.predictions.csv"))


def test_a_run_folder_of_another_engine_version_is_refused_like_a_config_change(tmp_path, monkeypatch):
    import bionn.engine_version
    from bionn.run.claim import Claim, claim

    config = OmegaConf.to_container(composed("debug=quick"), resolve=True, enum_to_str=True)
    folder = RunFolder(tmp_path / "run")
    folder.path.mkdir()
    folder.write_ledger(config)
    folder.write_history([{"epoch": 0.0, "loss": 1.0}])  # an epoch trained: the data it saw matters
    assert claim(folder, config, OnConfigChange.refuse) == Claim()  # same engine: resumes

    monkeypatch.setattr(bionn.engine_version, "ENGINE_VERSION", 3)
    with pytest.raises(ConfigChanged) as refused:
        claim(folder, config, OnConfigChange.refuse)
    assert (
        "data engine version (bionn.engine_version.ENGINE_VERSION): 2 (in the folder) -> 3 (this bionn)"
        in str(refused.value)
    )
    assert "runtime.on_config_change=move_aside" in str(refused.value)
    assert folder.ledger() is not None  # the reader checks the ledger with the version it recorded

    assert claim(folder, config, OnConfigChange.move_aside) == Claim(new_ledger=True, move_aside=True)


def test_evaluate_names_the_overrides_it_cannot_parse():
    from bionn.evaluate import other_dataset

    with pytest.raises(ConfigError, match="expected dataset=<name> or dataset.<key>=<value>"):
        other_dataset(OmegaConf.create({"name": "x"}), ["k1_max"])


@pytest.mark.parametrize(
    "argv",
    [
        ["RUN", "--config-dir", "CONF", "dataset=dsmall", "--which", "last", "dataset.shape.seed=7"],
        ["--config-dir", "CONF", "--which", "last", "RUN", "dataset=dsmall", "dataset.shape.seed=7"],
    ],
    ids=["options after the run folder", "options first"],
)
def test_evaluate_and_predict_take_options_before_or_after_the_run_folder(argv, tmp_path, capsys):
    from bionn import evaluate, predict

    args = evaluate.parse_args(argv)
    assert (args.run_dir, args.config_dir, args.which) == (Path("RUN"), "CONF", "last")
    assert args.overrides == ["dataset=dsmall", "dataset.shape.seed=7"]
    # through main: the folder is checked (and refused in one line), not the command line
    missing = str(tmp_path / "missing")
    assert evaluate.main([missing if a == "RUN" else a for a in argv]) == 2
    assert (
        f"bionn-evaluate: error: {missing}: no such run folder (nothing was written)"
        in capsys.readouterr().err
    )

    for order in (
        ["RUN", "--which", "last", "IN.npz", "--e0", "1"],
        ["--e0", "1", "RUN", "IN.npz", "--which", "last"],
    ):
        args = predict.parse_args(order)
        assert (args.run_dir, args.input, args.which, args.e0) == (Path("RUN"), Path("IN.npz"), "last", 1.0)
    assert predict.main([missing, str(tmp_path / "in.npz"), "--which", "last"]) == 2
    assert f"{missing}: no such run folder" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_predict_features_of_a_matrix_near_the_largest_float_are_those_of_the_matrix_scaled_down():
    """A finite matrix whose Frobenius norm overflows (values near 1e308): no overflow, the same features."""
    from bionn.data.absorbance import svd_features
    from bionn.data.kinetics import SIGN_RULES
    from bionn.predict import matrix_features

    small = np.random.default_rng(0).uniform(0.1, 1.0, (2, 501, 4))
    small[1] *= -1e-3
    rule = SIGN_RULES["max_abs_positive"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        huge = matrix_features(small * 1.7e308, 3, rule)
        scaled = matrix_features(small, 3, rule)
    assert np.isfinite(huge).all()
    np.testing.assert_allclose(huge, scaled, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(scaled, svd_features(small, 3, rule)[0], rtol=1e-12, atol=1e-14)


@pytest.mark.slow
def test_bench_ensemble_scores_the_mean_prediction_and_refuses_runs_of_another_dataset(trained, tmp_path):
    """scripts/bench_ensemble.py (the ensemble measurement of docs/accuracy.md): each member scores what
    its run recorded, the ensemble what the mean of the members' predictions scores; runs trained on
    another dataset are refused naming the key."""
    from bionn.data.dataset import KineticsDataset
    from bionn.predict import run_dataset
    from bionn.train import run
    from bionn.trained import load_model

    run_dir, cache = trained
    other = tmp_path / "seed1"
    run(composed(*TRAINED, "runtime.seed=1", f"runtime.stats_cache_dir={cache}"), other)
    script = [sys.executable, str(ROOT / "scripts" / "bench_ensemble.py"), "--which", "last", "--json"]
    done = subprocess.run([*script, run_dir, other], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for member, folder in zip(result["members"], (run_dir, other), strict=True):
        recorded = RunFolder(folder).final()["evaluation"]["test"]
        np.testing.assert_allclose(member["r2_per_output"], recorded["r2_per_output"], atol=1e-5)

    ds = KineticsDataset(run_dataset(RunFolder(run_dir)))
    lo, hi = ds.splits["test"]
    batch = ds.generate(np.arange(lo, hi), concentrations=False)
    networks = [load_model(folder, "last") for folder in (run_dir, other)]
    predictions = [network.predict(batch.features[..., None], verbose=0) for network in networks]
    assert not np.allclose(predictions[0], predictions[1])  # two networks, not one twice
    expected = _r2(batch.labels, np.mean(predictions, axis=0))
    np.testing.assert_allclose(result["ensemble"]["r2_per_output"], expected["r2_per_output"], atol=1e-6)
    best = max(m["r2_mean"] for m in result["members"])
    assert result["gain_over_best_member"] == pytest.approx(expected["r2_mean"] - best, abs=1e-6)
    assert result["samples"] == hi - lo

    changed = tmp_path / "changed"
    shutil.copytree(other, changed)
    record = json.loads((changed / "info.json").read_text())
    record["config"]["dataset"]["shape"]["seed"] += 1
    (changed / "info.json").write_text(json.dumps(record))
    done = subprocess.run([*script, run_dir, changed], capture_output=True, text=True)
    assert done.returncode == 2
    assert "another dataset" in done.stderr and "dataset.shape.seed" in done.stderr
    assert "Traceback" not in done.stderr

    done = subprocess.run([*script, run_dir, tmp_path / "missing"], capture_output=True, text=True)
    assert done.returncode == 2 and "no such run folder" in done.stderr and "Traceback" not in done.stderr
