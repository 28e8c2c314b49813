"""The label choice, schedules, weight decay, precision, XLA options and Residual blocks."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from conftest import composed, make_dataset, rescaled_concentrations
from omegaconf import OmegaConf

from bionn.config.checks import check_run
from bionn.config.errors import ConfigError
from bionn.config.schema import Precision
from bionn.data.stats import statistics_key
from bionn.nn.model import build_model, compile_model
from bionn.nn.optim import LearningRate, PlateauCallback, check_precision, learning_rate

# ---- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override,allowed",
    [
        (
            "dataset.label=absolute",
            r"'absolute', expected one of \[seed, relative\].*full_key: dataset\.label",
        ),
        (
            "training.precision=float8",
            r"'float8', expected one of \[float32, mixed_float16, mixed_bfloat16\].*full_key: training\.prec",
        ),
        (
            "training.schedule.name=linear",
            r"'linear', expected one of \[constant, cosine, exponential, plateau\].*key: training\.schedule",
        ),
    ],
)
def test_unknown_choice_names_are_rejected_at_composition(override, allowed):
    import re

    with pytest.raises(Exception) as err:
        composed(override)
    # What Hydra prints: its own line, then the cause naming the value, the allowed ones and the key.
    shown = f"{err.value}\n{err.value.__cause__}"
    assert re.search(allowed, shown, re.S), shown


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            ["training.epochs=4", "training.schedule.name=cosine", "training.schedule.warmup_epochs=5"],
            r"the command-line override training\.schedule\.warmup_epochs=5: "
            r"training\.schedule\.warmup_epochs = 5\.0 is invalid: the warm-up "
            r"must end before the training does \(training\.epochs = 4\)",
        ),
        (["training.schedule.warmup_epochs=-1"], r"training\.schedule\.warmup_epochs = -1\.0 .*>= 0"),
        (["training.schedule.decay_rate=-0.5"], r"training\.schedule\.decay_rate = -0\.5 .*> 0 and <= 1"),
        (["training.schedule.decay_rate=1.5"], r"training\.schedule\.decay_rate = 1\.5 .*not a growth"),
        (["training.schedule.decay_epochs=0"], r"training\.schedule\.decay_epochs = 0\.0 .*> 0"),
        (["training.schedule.final_fraction=2"], r"training\.schedule\.final_fraction = 2\.0 .*0\.\.1"),
        (["training.schedule.plateau_factor=1"], r"training\.schedule\.plateau_factor = 1\.0 .*< 1"),
        (["training.schedule.plateau_patience=0"], r"training\.schedule\.plateau_patience = 0 .*>= 1"),
        (["training.schedule.min_learning_rate=1"], r"min_learning_rate = 1\.0 .*< compile\.learning_rate"),
        (["training.compile.weight_decay=-0.01"], r"training\.compile\.weight_decay = -0\.01 .*>= 0"),
        (["training.steps_per_execution=0"], r"training\.steps_per_execution = 0 .*>= 1"),
        (["training.jit_compile=true"], r"training\.jit_compile = True .*runtime\.deterministic=false"),
    ],
)
def test_contradictory_training_controls_are_rejected_by_check_run(overrides, message):
    cfg = composed(*overrides, with_hydra=True)
    with pytest.raises(ConfigError, match=message):
        check_run(cfg)


def test_documented_defaults_and_shipped_experiments_pass_the_checks():
    cfg = composed()
    t = cfg.training
    assert (t.schedule.name, t.precision, t.jit_compile, t.steps_per_execution) == (
        "constant",
        "float32",
        0,
        1,
    )
    assert cfg.dataset.label == "seed" and t.compile.weight_decay is None
    check_run(cfg)
    for experiment, label in (("TR", "seed"), ("TR_relative", "relative")):
        cfg = composed(f"experiment={experiment}")
        assert (
            cfg.model.name == "TR" and cfg.dataset.label == label and cfg.training.schedule.name == "cosine"
        )
        assert cfg.dataset.shape.fresh_train_each_epoch
        check_run(cfg)


def test_a_precision_the_hardware_cannot_run_is_rejected_naming_key_value_and_allowed():
    # Fake devices (no such hardware here): a CPU without bf16/fp16 units, and an old GPU.
    with pytest.raises(
        ConfigError,
        match=r"training\.precision = 'mixed_bfloat16' cannot run here: no GPU.*"
        r"avx512_bf16.*allowed: float32, mixed_float16, mixed_bfloat16 \(usable on this "
        r"machine: float32\)",
    ):
        check_precision("mixed_bfloat16", flags={"avx2", "fma"}, gpus=[])
    with pytest.raises(ConfigError, match=r"compute capability \[\(6, 1\)\], mixed_float16 needs >= 7\.0"):
        check_precision("mixed_float16", flags=set(), gpus=[(6, 1)])
    assert check_precision("mixed_float16", flags=set(), gpus=[(8, 0)]) is Precision.mixed_float16
    # A CPU with fp16 units (this machine's has avx512_fp16): TensorFlow still has no float16 CPU kernels.
    with pytest.raises(ConfigError, match=r"'mixed_float16' cannot run here: no GPU, and TensorFlow has no"):
        check_precision("mixed_float16", flags={"avx512_fp16", "amx_fp16"}, gpus=[])
    assert check_precision("float32", flags=set(), gpus=[]) is Precision.float32
    with pytest.raises(ConfigError, match=r"training\.precision = 'float8' is invalid: allowed: float32"):
        check_precision("float8")


# ---- label ------------------------------------------------------------------------------


def test_relative_label_is_the_seed_label_over_the_total_and_does_not_see_the_scale():
    from bionn.data.reference import reference_sample

    seed = make_dataset(
        **{"name": "s", "shape.n_samples": 700, "shape.batch_size": 16, "simulation.n_times": 81}
    )
    relative = make_dataset(
        **{
            "name": "s",
            "shape.n_samples": 700,
            "shape.batch_size": 16,
            "simulation.n_times": 81,
            "label": "relative",
        }
    )
    idx = np.arange(0, 600, 7)
    a, b = seed.generate(idx, concentrations=False), relative.generate(idx, concentrations=False)
    np.testing.assert_array_equal(a.features, b.features)
    np.testing.assert_allclose(b.labels, a.labels / (a.kinetic[:, 3:4] + a.kinetic[:, 4:5]), rtol=1e-14)
    assert statistics_key(seed, 100) != statistics_key(relative, 100)

    # (k1 / c, c E0, c S0): same features, seed label times c, relative label unchanged.
    one = reference_sample(seed, 0)
    e0, s0 = one["kinetic"][3:]
    c = 1.3
    conc = rescaled_concentrations(seed, one, c)
    u = one["features"] / np.linalg.norm(one["features"], axis=0)
    scaled_label = (conc.T @ u).T.reshape(-1)
    np.testing.assert_allclose(scaled_label, c * one["labels"], rtol=1e-6)
    np.testing.assert_allclose(scaled_label / (c * (e0 + s0)), one["labels"] / (e0 + s0), rtol=1e-6)
    # Recovering absolute concentrations from the relative label and the known E0 + S0:
    label = relative.generate(np.array([0]), concentrations=True)
    matrix = label.labels[0].reshape(relative.n_components, 4)
    u0 = label.features[0] / np.linalg.norm(label.features[0], axis=0)
    np.testing.assert_allclose((e0 + s0) * u0 @ matrix, label.concentrations[0], atol=1e-7 * (e0 + s0))


# ---- schedules --------------------------------------------------------------------------


def test_schedules_follow_their_formulas():
    def rates(rate, steps):
        return np.array([float(rate(s)) for s in steps])

    cosine = LearningRate(1e-3, total_steps=100, schedule="cosine", warmup_steps=10, final_fraction=0.1)
    got = rates(cosine, [0, 4, 9, 10, 55, 100, 150])
    np.testing.assert_allclose(got[:3], [1e-4, 5e-4, 1e-3], rtol=1e-5)  # linear warm-up to the peak
    np.testing.assert_allclose(got[3:], [1e-3, 1e-3 * (0.1 + 0.9 * 0.5), 1e-4, 1e-4], rtol=1e-5)
    exponential = LearningRate(1e-2, total_steps=100, schedule="exponential", decay_rate=0.5, decay_steps=20)
    np.testing.assert_allclose(rates(exponential, [0, 20, 50]), [1e-2, 5e-3, 1e-2 * 0.5**2.5], rtol=1e-5)

    cfg = composed(
        "training.schedule.name=plateau",
        "training.schedule.plateau_patience=2",
        "training.schedule.min_learning_rate=0.0002",
    )
    rate, callbacks = learning_rate(cfg.training, steps_per_epoch=10)
    (plateau,) = callbacks
    assert isinstance(plateau, PlateauCallback)
    for epoch, val_loss in enumerate([1.0, 0.9, 0.95, 0.92, 0.8, 0.85, 0.9, 0.91, 0.95, 0.99, 1.0, 1.1]):
        plateau.on_epoch_end(epoch, {"val_loss": val_loss})
        if epoch == 3:
            assert float(rate(0)) == pytest.approx(5e-4)  # two epochs without a new best: halved
    assert float(rate(0)) == pytest.approx(2e-4)  # never below min_learning_rate


# ---- precision and Residual ---------------------------------------------------------------


RESIDUAL_MODEL = {
    "name": "R",
    "layers": [
        {"type": "AveragePooling2D", "pool_size": [4, 1]},
        {"type": "Flatten"},
        {"type": "Dense", "units": 16, "activation": "gelu"},
        {
            "type": "Residual",
            "layers": [{"type": "Dense", "units": 8, "activation": "gelu"}, {"type": "Dense", "units": 16}],
        },
        {"type": "Dense", "units": 12},
    ],
}


def test_residual_block_adds_its_input_and_reloads(tmp_path):
    model = build_model(OmegaConf.create(RESIDUAL_MODEL), (40, 3, 1), 12)
    block = model.layers[3]
    x = np.random.default_rng(0).normal(size=(5, 16)).astype("float32")
    inner = x
    for layer in block.inner:
        inner = layer(inner)
    np.testing.assert_allclose(block(x), x + np.asarray(inner), rtol=1e-6)
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras")
    data = np.random.default_rng(1).normal(size=(4, 40, 3, 1)).astype("float32")
    np.testing.assert_allclose(again.predict(data, verbose=0), model.predict(data, verbose=0), rtol=1e-6)


@pytest.mark.parametrize(
    "block,message",
    [
        (
            {"type": "Residual", "layers": [{"type": "Dense", "units": 8}]},
            r"layers do not fit together.*"
            r"Residual block's layers must keep their input's shape",
        ),
        (
            {"type": "Residual", "layers": []},
            r"model\.layers\[3\]\.layers must be a non-empty list of layers",
        ),
        (
            {"type": "Residual", "layers": [{"type": "Dense", "unitz": 8}]},
            r"model\.layers\[3\]\.layers\[0\] \(Dense\): unknown argument 'unitz'",
        ),
        (
            {"type": "Residual", "layers": [{"type": "Dense", "units": 16}], "skip": 2},
            r"\(Residual\): unknown argument 'skip'; valid: layers, repeat, name",
        ),
    ],
)
def test_bad_residual_blocks_name_the_place(block, message):
    spec = json.loads(json.dumps(RESIDUAL_MODEL))
    spec["layers"][3] = block
    with pytest.raises(ConfigError, match=message):
        build_model(OmegaConf.create(spec), (40, 3, 1), 12)


@pytest.mark.parametrize("precision", [Precision.mixed_float16, Precision.mixed_bfloat16])
def test_mixed_precision_keeps_the_output_layer_the_destandardisation_and_the_loss_float32(precision):
    """Runs on every CPU: the policy is set as apply_precision sets it, without its machine check (which
    refuses a CPU without bf16 units; tested apart with given flags). Builds, casts and values only, no
    speed. A label mean of 1000 with a scale of 0.001 needs float32: in 16 bits 1000 + z / 1000 is 1000."""
    mean, scale = np.full(12, 1000.0), np.full(12, 0.001)
    cfg = composed(f"training.precision={precision.value}")
    try:
        keras.config.set_dtype_policy(precision.value)
        model = build_model(OmegaConf.create(RESIDUAL_MODEL), (40, 3, 1), 12, (mean, scale))
        compile_model(model, cfg.training.compile, (mean, scale))
        half = {"mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}[precision.value]
        assert model.layers[2].compute_dtype == half and model.layers[2].variable_dtype == "float32"
        assert model.layers[-2].compute_dtype == "float32" and model.layers[-1].compute_dtype == "float32"
        x = np.random.default_rng(0).normal(size=(8, 40, 3, 1)).astype("float32")
        out = model(x)
        assert out.dtype == "float32"
        inner = np.asarray(keras.Model(model.inputs, model.layers[-2].output)(x), "float64")
        np.testing.assert_allclose(np.asarray(out), inner * scale + mean, rtol=0, atol=2e-4)
        y = (inner * scale + mean + 0.001).astype("float32")  # every standardised residual is -1
        loss = model.compute_loss(x=x, y=y, y_pred=out)
        assert loss.dtype == "float32" and float(loss) == pytest.approx(1.0, rel=0.15)
    finally:
        keras.config.set_dtype_policy("float32")


def test_sweep_report_shows_ceiling_and_ridge_beside_r2_mean(tmp_path):
    import csv

    from bionn import report

    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("- experiment=TR_relative\n")
    final = {
        "status": "completed",
        "epochs_completed": 16,
        "evaluation": {"test": {"loss": 0.1, "r2_mean": 0.93, "r2_per_output": [0.9] * 12}},
        "reference": {"label": "relative", "ceiling_r2_mean": 1.0, "ridge_r2_mean": 0.7257},
    }
    (run / "final_results.json").write_text(json.dumps(final))
    _, text = report.write_report(run, baseline=None)
    header = next(line for line in text.splitlines() if line.startswith("| job"))
    assert "test r2_mean | test ceiling_r2 | test ridge_r2" in header
    with open(run / "summary.csv", newline="") as handle:
        row = next(csv.DictReader(handle))
    assert (row["test_ceiling_r2"], row["test_ridge_r2"]) == ("1.0", "0.7257")
