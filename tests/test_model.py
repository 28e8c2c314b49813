"""Model building from layer specs, compile options and the pooled R-squared metric."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import composed
from omegaconf import OmegaConf

from bionn.config.errors import ConfigError
from bionn.config.schema import CompileConfig
from bionn.nn.metrics import PooledRSquared
from bionn.nn.model import build_model, compile_model


def model_cfg(*layers, name="T"):
    return OmegaConf.create({"name": name, "layers": list(layers)})


@pytest.mark.parametrize("name", ["A", "E", "P", "P2"])
def test_seed_models_build_with_their_toml_spellings(name):
    cfg = composed(f"model={name}")
    model = build_model(cfg.model, (501, 3, 1), 12)
    assert model.output_shape == (None, 12)
    assert [type(layer).__name__ for layer in model.layers] == [spec.type for spec in cfg.model.layers]


@pytest.mark.parametrize(
    "layers,message",
    [
        (
            [{"type": "Dense2", "units": 12}],
            r"model\.layers\[0\]: unknown layer type 'Dense2'; did you mean Dense",
        ),
        (
            [{"type": "Flatten"}, {"type": "Dense", "unit": 12}],
            r"model\.layers\[1\] \(Dense\): unknown argument 'unit'; valid: units, activation",
        ),
        ([{"units": 12}], r"model\.layers\[0\]: a layer is a mapping with a 'type' string"),
        (
            [{"type": "Flatten"}, {"type": "Dense", "units": 10}],
            r"last layer gives 10 outputs but a label has 12",
        ),
        ([{"type": "Dense", "units": 12, "activation": "nope"}], r"model\.layers\[0\] \(Dense\): .*nope"),
    ],
)
def test_bad_layers_name_position_argument_and_valid_ones(layers, message):
    with pytest.raises(ConfigError, match=message):
        build_model(model_cfg(*layers), (501, 3, 1), 12)


@pytest.mark.parametrize(
    "change,message",
    [
        ({"optimizer": "adamm"}, r"unknown optimizer 'adamm'"),
        ({"loss": "mse2"}, r"unknown loss 'mse2'"),
        ({"metrics": ["R_squared", "Accuracyy"]}, r"unknown metric 'Accuracyy'; allowed: R_squared or any"),
    ],
)
def test_bad_compile_options(change, message):
    model = build_model(model_cfg({"type": "Flatten"}, {"type": "Dense", "units": 12}), (501, 3, 1), 12)
    cfg = OmegaConf.merge(OmegaConf.structured(CompileConfig), change)
    with pytest.raises(ConfigError, match=message):
        compile_model(model, cfg)


def test_compile_uses_learning_rate_clipvalue_and_metric_names():
    model = build_model(model_cfg({"type": "Flatten"}, {"type": "Dense", "units": 12}), (501, 3, 1), 12)
    cfg = OmegaConf.merge(
        OmegaConf.structured(CompileConfig),
        {
            "optimizer": "sgd",
            "learning_rate": 0.25,
            "clipvalue": 0.5,
            "metrics": ["R_squared", "R2Score", "MeanAbsoluteError"],
        },
    )
    compile_model(model, cfg)
    assert type(model.optimizer).__name__ == "SGD"
    assert float(model.optimizer.learning_rate) == 0.25 and model.optimizer.clipvalue == 0.5
    x = np.random.default_rng(0).normal(size=(8, 501, 3, 1)).astype("float32")
    logs = model.evaluate(x, np.zeros((8, 12), "float32"), verbose=0, return_dict=True)
    assert {"loss", "r_squared", "r2_score", "mean_absolute_error"} <= set(logs)


def test_pooled_r_squared_is_exact_over_batches():
    rng = np.random.default_rng(3)
    y = rng.normal(size=(100, 12)) + np.arange(12)
    p = y + rng.normal(scale=0.5, size=y.shape)
    metric = PooledRSquared()
    for lo in range(0, 100, 7):
        metric.update_state(y[lo : lo + 7], p[lo : lo + 7])
    expected = 1 - ((y - p) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    assert float(metric.result()) == pytest.approx(expected, rel=1e-6)
    constant = PooledRSquared()
    constant.update_state(y, np.broadcast_to(y.mean(0), y.shape))
    # a per-output constant predictor already scores high on the pooled definition
    assert float(constant.result()) > 0.8


def test_the_static_layer_reader_agrees_with_the_imported_keras_layers():
    """bionn.config.layers reads keras.layers from source (no TensorFlow); it must match Keras itself."""
    import inspect

    import keras

    from bionn.config.layers import BASE_LAYER_KWARGS, keras_layers

    imported = {}
    for name in dir(keras.layers):
        cls = getattr(keras.layers, name)
        if inspect.isclass(cls) and issubclass(cls, keras.layers.Layer):
            params = inspect.signature(cls.__init__).parameters
            named = [
                p
                for p, v in params.items()
                if p != "self" and v.kind not in (v.VAR_POSITIONAL, v.VAR_KEYWORD)
            ]
            imported[name] = (*named, *(k for k in BASE_LAYER_KWARGS if k not in named))
    static = keras_layers()
    assert {n: static.get(n) for n in imported} == imported


def test_model_vars_size_a_family_and_a_repeated_residual_block_has_weights_of_its_own():
    """TR's width and number of residual blocks come from model.vars (what hparams_search=TR varies)."""
    cfg = composed("model=TR", "model.vars.width=16", "model.vars.blocks=3")
    model = build_model(cfg.model, (501, 3, 1), 12)
    residual = [layer for layer in model.layers if type(layer).__name__ == "Residual"]
    assert len(residual) == 3 and len({id(layer.inner[0]) for layer in residual}) == 3
    assert residual[0].inner[0].units == 16 and model.layers[2].units == 16
    with pytest.raises(ConfigError, match=r"repeat = 0 must be a whole number >= 1"):
        build_model(composed("model=TR", "model.vars.blocks=0").model, (501, 3, 1), 12)


# ---- LogTimePooling and the TRX family -------------------------------------------------------


@pytest.mark.parametrize("bins", [2, 3, 16, 32, 64, 128, 250, 500, 501])
def test_log_time_bins_cover_every_time_point_exactly_once_and_widen(bins):
    from bionn.nn.blocks import log_time_edges

    edges = log_time_edges(501, bins)
    assert len(edges) == bins + 1 and edges[0] == 0 and edges[-1] == 501
    points = np.concatenate([np.arange(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)])
    np.testing.assert_array_equal(points, np.arange(501))  # each point in exactly one bin, none empty
    widths = np.diff(edges)
    assert widths.min() >= 1 and widths[-1] >= widths[0]
    if bins in (16, 32, 64, 128):  # the searched sizes: widths never shrink, the first bins are single points
        assert (np.diff(widths) >= 0).all() and widths[0] == 1 and widths[-1] > 8


def test_log_time_pooling_averages_each_bin_and_reloads(tmp_path):
    import keras

    from bionn.nn.blocks import LogTimePooling, log_time_edges

    layers = ({"type": "LogTimePooling", "bins": 64}, {"type": "Flatten"}, {"type": "Dense", "units": 12})
    model = build_model(model_cfg(*layers), (501, 3, 1), 12)
    pooling = model.layers[0]
    assert isinstance(pooling, LogTimePooling) and pooling.get_config()["bins"] == 64
    x = np.random.default_rng(0).normal(size=(5, 501, 3, 1)).astype("float32")
    pooled = np.asarray(pooling(x))
    edges = log_time_edges(501, 64)
    bins = zip(edges[:-1], edges[1:], strict=True)
    expected = np.stack([x[:, a:b].astype("float64").mean(axis=1) for a, b in bins], axis=1)
    assert pooled.shape == (5, 64, 3, 1)
    assert pooling.compute_output_shape((None, 501, 3, 1)) == (None, 64, 3, 1)
    np.testing.assert_allclose(pooled, expected, rtol=1e-5, atol=1e-6)
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras")
    assert isinstance(again.layers[0], LogTimePooling) and again.layers[0].bins == 64
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)


@pytest.mark.parametrize(
    "spec,message",
    [
        (
            {"type": "LogTimePooling", "bins": 1},
            r"model\.layers\[0\] \(LogTimePooling\): bins = 1 is invalid: .*whole number from 2 to the "
            r"input's time points \(501",
        ),
        ({"type": "LogTimePooling", "bins": 2.5}, r"\(LogTimePooling\): bins = 2\.5 is invalid"),
        ({"type": "LogTimePooling", "bins": "64"}, r"\(LogTimePooling\): bins = '64' is invalid"),
        (
            {"type": "LogTimePooling", "bins": 600},
            r"layers do not fit together: LogTimePooling: bins = 600 does not fit an input of 501 time "
            r"points \(allowed: 2 to 501\)",
        ),
        ({"type": "LogTimePooling", "bin": 64}, r"unknown argument 'bin'; valid: bins, name"),
    ],
)
def test_bad_log_time_pooling_names_the_key_and_the_allowed_values(spec, message):
    with pytest.raises(ConfigError, match=message):
        build_model(model_cfg(spec, {"type": "Flatten"}, {"type": "Dense", "units": 12}), (501, 3, 1), 12)


def test_trx_at_its_defaults_is_tr_and_its_vars_choose_the_representation():
    """conf/model/TRX.yaml: the same weights and outputs as TR at its defaults (the Identity front adds
    nothing), and model.vars pick the pooling and the front (what hparams_search=TRX varies)."""
    import keras

    x = np.random.default_rng(0).normal(size=(4, 501, 3, 1)).astype("float32")
    keras.utils.set_random_seed(1)
    tr = build_model(composed("model=TR").model, (501, 3, 1), 12)
    keras.utils.set_random_seed(1)
    trx = build_model(composed("model=TRX").model, (501, 3, 1), 12)
    assert len(tr.get_weights()) == len(trx.get_weights())
    for a, b in zip(tr.get_weights(), trx.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(np.asarray(tr(x)), np.asarray(trx(x)))

    def front(*overrides):
        model = build_model(composed("model=TRX", "model.vars.width=16", *overrides).model, (501, 3, 1), 12)
        return [type(layer).__name__ for layer in model.layers[:2]], model.layers[2].output.shape

    assert front("model.vars.pool=8") == (["Identity", "AveragePooling2D"], (None, 62 * 3))
    log_pooling = front("model.vars.pooling=log", "model.vars.bins=32")
    assert log_pooling == (["Identity", "LogTimePooling"], (None, 32 * 3))
    assert front("model.vars.front=conv") == (["Conv2D", "AveragePooling2D"], (None, 125 * 3 * 8))
    missing = r"model\.vars\.fronts\.cnn, which does not exist \(allowed at model\.vars\.fronts: none, conv\)"
    with pytest.raises(ConfigError, match=missing):
        build_model(composed("model=TRX", "model.vars.front=cnn").model, (501, 3, 1), 12)
