"""Keras models from layer specs, and their compilation from the training config."""

from __future__ import annotations

import difflib
import inspect
from typing import Any

import keras
from omegaconf import OmegaConf

from bionn.config.schema import ConfigError
from bionn.nn.blocks import BLOCK_TYPES, RESIDUAL, Residual
from bionn.nn.metrics import CUSTOM_METRICS, Destandardise, PerOutputRSquared, StandardisedLoss

# Keyword arguments every Keras layer accepts through its base class.
_BASE_LAYER_KWARGS = ("name", "dtype", "trainable", "autocast")


def layer_class(type_name: str, where: str) -> type:
    cls = getattr(keras.layers, type_name, None)
    if not (inspect.isclass(cls) and issubclass(cls, keras.layers.Layer)):
        known = sorted(n for n in dir(keras.layers) if inspect.isclass(getattr(keras.layers, n)))
        close = difflib.get_close_matches(type_name, known, n=3)
        hint = (
            f"; did you mean {', '.join(close)}?"
            if close
            else f" (any class in keras.layers, or {', '.join(BLOCK_TYPES)})"
        )
        raise ConfigError(f"{where}: unknown layer type {type_name!r}{hint}")
    return cls


def layer_kwargs(cls: type) -> list[str]:
    """The keyword arguments a layer class accepts."""
    params = inspect.signature(cls.__init__).parameters
    named = [p for p, v in params.items() if p != "self" and v.kind not in (v.VAR_POSITIONAL, v.VAR_KEYWORD)]
    return named + [k for k in _BASE_LAYER_KWARGS if k not in named]


def make_layer(spec: Any, position: int | str, model_name: str) -> keras.layers.Layer:
    """One layer of a spec; position is its index in model.layers (or the full path of a nested one)."""
    spec = OmegaConf.to_container(spec) if not isinstance(spec, dict) else dict(spec)
    where = (
        position if isinstance(position, str) else f"conf/model/{model_name}.yaml: model.layers[{position}]"
    )
    if not isinstance(spec, dict) or "type" not in spec:
        raise ConfigError(f"{where}: a layer is a mapping with a 'type' key, got {spec!r}")
    kwargs = {k: v for k, v in spec.items() if k != "type"}
    if spec["type"] == RESIDUAL:  # issue 16: y = x + f(x), f = its own list of layer specs
        return _residual(kwargs, where, model_name)
    cls = layer_class(str(spec["type"]), where)
    valid = layer_kwargs(cls)
    for key in kwargs:
        if key not in valid:
            raise ConfigError(
                f"{where} ({spec['type']}): unknown argument {key!r}; valid: {', '.join(valid)}"
            )
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where} ({spec['type']}): {err}") from None


def _residual(kwargs: dict, where: str, model_name: str) -> Residual:
    inner = kwargs.pop("layers", None)
    if not isinstance(inner, list) or not inner:
        raise ConfigError(f"{where} ({RESIDUAL}): 'layers' must be a non-empty list of layer specs")
    extra = sorted(set(kwargs) - {"name"})
    if extra:
        raise ConfigError(f"{where} ({RESIDUAL}): unknown argument {extra[0]!r}; valid: layers, name")
    layers = [make_layer(spec, f"{where}.layers[{i}]", model_name) for i, spec in enumerate(inner)]
    return Residual(layers, **kwargs)


def build_model(
    model_cfg: Any,
    input_shape: tuple[int, ...],
    n_outputs: int,
    label_scaling: tuple[Any, Any] | None = None,
) -> keras.Model:
    """A built Sequential model; the input shape comes from the data, not the config.

    label_scaling=(mean, scale): the configured layers learn standardised labels and a
    final `Destandardise` layer maps them back, so the model predicts original-scale labels.
    """
    name = str(model_cfg.name)
    specs = list(model_cfg.layers)
    if keras.config.dtype_policy().name != "float32":  # mixed precision: the output layer stays float32
        specs[-1] = {"dtype": "float32", **_as_dict(specs[-1])}
    layers = [make_layer(spec, i, name) for i, spec in enumerate(specs)]
    try:
        model = keras.Sequential([keras.Input(shape=input_shape), *layers], name=f"model_{name}")
        outputs = model.output_shape[-1]
    except (ValueError, AttributeError) as err:
        raise ConfigError(f"conf/model/{name}.yaml: the layers do not fit together: {err}") from None
    if outputs != n_outputs:
        raise ConfigError(
            f"conf/model/{name}.yaml: the last layer gives {outputs} outputs but a label has {n_outputs} "
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
            f"training.compile.metrics: unknown metric {name!r}; allowed: R_squared or any keras.metrics "
            f"name (e.g. MeanSquaredError, MeanAbsoluteError, RootMeanSquaredError, R2Score)"
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
            f"training.compile.optimizer: unknown optimizer {compile_cfg.optimizer!r}; allowed: any "
            "keras.optimizers name (adam, sgd, rmsprop, adamw, ...)"
        ) from None
    try:
        loss = keras.losses.get(compile_cfg.loss)
    except ValueError:
        raise ConfigError(
            f"training.compile.loss: unknown loss {compile_cfg.loss!r}; allowed: any keras.losses name "
            "(mean_squared_error, mean_absolute_error, huber, ...)"
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
