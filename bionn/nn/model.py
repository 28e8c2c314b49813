"""Keras models from layer specs, and their compilation from the training config."""

from __future__ import annotations

from typing import Any

import keras
from omegaconf import OmegaConf

from bionn.config.errors import ConfigError
from bionn.config.layers import LOG_TIME_POOLING, RESIDUAL, check_layer_spec, check_layers, layer_arguments
from bionn.config.sources import source_of
from bionn.nn.blocks import LogTimePooling, Residual
from bionn.nn.metrics import CUSTOM_METRICS, Destandardise, PerOutputRSquared, StandardisedLoss


def make_layer(spec: Any, where: str) -> keras.layers.Layer:
    """A Keras layer (or one of bionn.nn.blocks) from a spec checked by bionn.config.layers; Keras judges the
    values."""
    spec = check_layer_spec(spec, where)
    if spec["type"] == RESIDUAL:  # y = x + f(x), f = its own list of layer specs
        inner = [make_layer(s, f"{where}.layers[{i}]") for i, s in enumerate(spec["layers"])]
        return Residual(inner, **{k: v for k, v in spec.items() if k not in ("type", "layers")})
    try:
        if spec["type"] == LOG_TIME_POOLING:
            return LogTimePooling(**layer_arguments(spec))
        return getattr(keras.layers, spec["type"])(**layer_arguments(spec))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where} ({spec['type']}): {err}") from None


def build_model(
    model_cfg: Any,
    input_shape: tuple[int, ...],
    n_outputs: int,
    label_scaling: tuple[Any, Any] | None = None,
    source: str | None = None,
) -> keras.Model:
    """A built Sequential model; the input shape comes from the data, not the config.

    label_scaling=(mean, scale): the configured layers learn standardised labels and a
    final `Destandardise` layer maps them back, so the model predicts original-scale labels.
    source: the model config's file for error messages (default: the one Hydra used).
    """
    name = str(model_cfg.name)
    source = source or source_of("model.layers")
    specs = check_layers(model_cfg.layers, f"{source}: model.layers")  # Residual repeats spelled out
    if keras.config.dtype_policy().name != "float32":  # mixed precision: the output layer stays float32
        specs[-1] = {"dtype": "float32", **_as_dict(specs[-1])}
    layers = [make_layer(spec, f"{source}: model.layers[{i}]") for i, spec in enumerate(specs)]
    try:
        model = keras.Sequential([keras.Input(shape=input_shape), *layers], name=f"model_{name}")
        outputs = model.output_shape[-1]
    except (ValueError, AttributeError) as err:
        raise ConfigError(f"{source}: the layers do not fit together: {err}") from None
    if outputs != n_outputs:
        raise ConfigError(
            f"{source}: the last layer gives {outputs} outputs but a label has {n_outputs} "
            f"(k x 4); end the model with Dense(units={n_outputs})"
        )
    if label_scaling is not None:
        model.add(Destandardise(*label_scaling, name="destandardise", dtype="float32"))
    return model


def _as_dict(spec: Any) -> Any:
    return OmegaConf.to_container(spec) if OmegaConf.is_config(spec) else spec


def make_metric(name: str) -> keras.metrics.Metric:
    if name in CUSTOM_METRICS:
        return CUSTOM_METRICS[name]()
    try:
        return keras.metrics.get(name)
    except ValueError:
        raise ConfigError(
            f"{source_of('training.compile.metrics')}: training.compile.metrics: unknown metric {name!r}; "
            "allowed: R_squared or any keras.metrics name (e.g. MeanSquaredError, MeanAbsoluteError, "
            "RootMeanSquaredError, R2Score)"
        ) from None


def check_compile(compile_cfg: Any, learning_rate: Any = None) -> tuple[Any, Any, list[keras.metrics.Metric]]:
    """Optimizer, loss and metrics of a compile config; ConfigError names any unknown one.

    learning_rate: a schedule replacing compile_cfg.learning_rate (bionn.nn.optim)."""
    options: dict[str, Any] = {"learning_rate": learning_rate or compile_cfg.learning_rate}
    if compile_cfg.clipvalue is not None:
        options["clipvalue"] = compile_cfg.clipvalue
    if compile_cfg.get("weight_decay") is not None:
        options["weight_decay"] = compile_cfg.weight_decay
    try:
        optimizer = keras.optimizers.get({"class_name": compile_cfg.optimizer, "config": options})
    except ValueError:
        raise ConfigError(
            f"{source_of('training.compile.optimizer')}: training.compile.optimizer: unknown optimizer "
            f"{compile_cfg.optimizer!r}; allowed: any keras.optimizers name (adam, sgd, rmsprop, adamw, ...)"
        ) from None
    try:
        loss = keras.losses.get(compile_cfg.loss)
    except ValueError:
        raise ConfigError(
            f"{source_of('training.compile.loss')}: training.compile.loss: unknown loss "
            f"{compile_cfg.loss!r}; allowed: any keras.losses name (mean_squared_error, "
            "mean_absolute_error, huber, ...)"
        ) from None
    metrics = [make_metric(str(m)) for m in compile_cfg.metrics]
    return optimizer, loss, metrics


def compile_model(
    model: keras.Model,
    compile_cfg: Any,
    label_scaling: tuple[Any, Any] | None = None,
    learning_rate: Any = None,
    jit_compile: bool = False,
    steps_per_execution: int = 1,
) -> PerOutputRSquared:
    """Optimizer by name with learning rate and clipvalue, loss by name, metrics by name,
    plus `r2_mean` (per-output R-squared, always); returns that metric (its `per_output()`
    holds the last evaluation's values). label_scaling=(mean, scale): the loss is taken on
    standardised labels (`StandardisedLoss`), the metrics stay on the original scale.
    learning_rate, jit_compile, steps_per_execution: see `bionn.nn.optim.compile_for_training`."""
    optimizer, loss, metrics = check_compile(compile_cfg, learning_rate)
    if label_scaling is not None:
        loss = StandardisedLoss(str(compile_cfg.loss), *label_scaling)
    r2 = PerOutputRSquared(model.output_shape[-1])
    model.compile(
        optimizer=optimizer,
        loss=loss,
        metrics=[*metrics, r2],
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )
    return r2
