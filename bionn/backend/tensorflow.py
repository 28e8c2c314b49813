"""The TensorFlow backend: the tf.distribute strategy (one process, or one Slurm step of N tasks), the
tf.data feed over a `BatchSource`, and the devices, determinism and GPU details a run asks for.

Inside a Slurm step of more than one task (`srun`, or submitit with nodes > 1 or
tasks_per_node > 1) every task is a worker of one MultiWorkerMirroredStrategy;
the cluster layout comes from Slurm's own environment (SlurmClusterResolver).
"""

from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from bionn.backend import PORT_STRIDE, port_base
from bionn.clock import EpochClock
from bionn.config.errors import ConfigError
from bionn.data.dataset import KineticsDataset, aligned_empty
from bionn.data.pipeline import BatchSource, ReplicaShard, batch_source
from bionn.data.stats import Statistics
from bionn.pins import require_tested
from bionn.slurm import Worker, step_tasks


def split_cpu(replicas: int) -> None:
    """Make `replicas` logical CPU devices; possible only before TensorFlow initialises its runtime."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if len(current or [None]) == replicas:
        return
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
    except RuntimeError:
        have = len(tf.config.list_logical_devices("CPU"))
        raise ConfigError(
            f"runtime.cpu_replicas = {replicas} is invalid here: this process already runs TensorFlow "
            f"with {have} CPU device(s), and the device layout is fixed once TensorFlow starts. Use one "
            "cpu_replicas value per process (sweep it with a launcher that starts one process per job)."
        ) from None


def make_strategy(cpu_replicas: int = 1) -> tuple[tf.distribute.Strategy, Worker]:
    """The strategy of this process and its place among the workers.

    One process: MirroredStrategy over every local GPU, without GPUs over
    `cpu_replicas` logical CPUs. A Slurm step of N > 1 tasks: MultiWorkerMirroredStrategy
    over all tasks (each with its node's share of GPUs, or its CPU).
    The global batch is the dataset's batch_size, split evenly across all replicas.
    """
    if step_tasks() > 1:
        if cpu_replicas != 1:
            raise ConfigError(
                f"runtime.cpu_replicas = {cpu_replicas} is invalid in a Slurm step of "
                f"{step_tasks()} tasks: multi-worker training uses one CPU device per task; "
                "allowed: 1 (add tasks with hydra.launcher.tasks_per_node or nodes instead)"
            )
        return make_multi_worker_strategy()
    if tf.config.list_physical_devices("GPU"):
        return tf.distribute.MirroredStrategy(), Worker()
    split_cpu(cpu_replicas)
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:cpu_replicas]
    return tf.distribute.MirroredStrategy(devices=devices), Worker()


def make_multi_worker_strategy() -> tuple[tf.distribute.Strategy, Worker]:
    """MultiWorkerMirroredStrategy over the tasks of this Slurm step (call inside `srun`)."""
    require_tested("tensorflow")
    from tensorflow.python.distribute.cluster_resolver.slurm_cluster_resolver import (
        SlurmClusterResolver,
        expand_tasks_per_node,
    )

    # The GPUs Slurm gave this node (counted without initialising CUDA, which would freeze
    # CUDA_VISIBLE_DEVICES before the resolver hands each task its share).
    gpus = len([d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()])
    tasks_on_node = max(expand_tasks_per_node(os.environ["SLURM_STEP_TASKS_PER_NODE"]))
    if tasks_on_node > PORT_STRIDE:
        raise ConfigError(
            f"hydra.launcher.tasks_per_node = {tasks_on_node} is invalid for multi-worker training: "
            f"at most {PORT_STRIDE} tasks per node (one port each)"
        )
    ports = port_base(int(os.environ["SLURM_JOB_ID"]))
    if gpus >= tasks_on_node:
        resolver = SlurmClusterResolver(port_base=ports, gpus_per_node=gpus)
    else:  # CPU workers: one pseudo-GPU slot per task keeps the resolver's layout loop going, no CUDA set
        resolver = SlurmClusterResolver(
            port_base=ports, gpus_per_node=tasks_on_node, gpus_per_task=1, auto_set_gpu=False
        )
    patch_keras_multi_worker()
    strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    return strategy, Worker(index=resolver.task_id, count=resolver.cluster_spec().num_tasks("worker"))


def patch_keras_multi_worker() -> None:
    """Make Keras 3 `fit`/`evaluate` work under MultiWorkerMirroredStrategy (keras-team/keras#20585).

    Two functions of Keras' TensorFlow trainer assume one worker:
    - `_maybe_symbolic_build` all-reduces a whole input batch just to learn its shapes;
      any one replica's batch tells the same, so take the first local one.
    - `reduce_per_replica(..., "mean")` reduces scalar per-replica metrics "along axis 0";
      averaging them elementwise across replicas (axis=None) is what the one-worker path does.
    Both are replaced only in multi-worker mode; every other call goes to Keras unchanged.
    """
    from keras.src.backend.tensorflow import trainer

    require_tested("keras")
    if getattr(trainer, "_bionn_multi_worker_patch", False):
        return
    keras_reduce = trainer.reduce_per_replica
    keras_build = trainer.TensorFlowTrainer._maybe_symbolic_build

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and trainer._collective_all_reduce_multi_worker(strategy):
            return tf.nest.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return keras_reduce(values, strategy, reduction)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self._distribute_strategy
        if iterator is None or strategy is None or not trainer._collective_all_reduce_multi_worker(strategy):
            return keras_build(self, iterator=iterator, data_batch=data_batch)
        for _, _, it in iterator:
            batch = next(it)
            data_batch = tf.nest.map_structure(
                lambda x: (
                    strategy.experimental_local_results(x)[0]
                    if isinstance(x, tf.distribute.DistributedValues)
                    else x
                ),
                batch,
            )
            break
        return keras_build(self, iterator=None, data_batch=data_batch)

    trainer.reduce_per_replica = reduce_per_replica
    trainer.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
    trainer._bionn_multi_worker_patch = True


def make_dataset(source: BatchSource, keep: bool = False) -> tf.data.Dataset:
    """A batch source's batches (bionn.data.pipeline.batch_source) as a tf.data pipeline; cardinality is
    known, so Keras shows steps. keep: the batches are the same every pass; kept in memory after the first
    (in Python: tf.data's own cache drops what it holds when Keras stops at the known cardinality without
    reading the end of the data, as evaluate does)."""
    ds, shard = source.ds, source.shard
    chunk, batch = source.chunk, source.batch
    if keep:
        chunk, batch = remembered(chunk), remembered(batch)
    feature_shape = (None, *ds.feature_shape)
    label_shape = (None, ds.n_labels)

    def load_chunk(c):
        features, labels = tf.numpy_function(
            lambda c: chunk(c, source.per_chunk), [c], (tf.float32, tf.float32), stateful=True
        )
        elements = source.per_chunk * shard.count
        return (
            tf.ensure_shape(features, (elements, source.per_replica, *ds.feature_shape)),
            tf.ensure_shape(labels, (elements, source.per_replica, ds.n_labels)),
        )

    def load_batch(b):
        features, labels = tf.numpy_function(batch, [b], (tf.float32, tf.float32), stateful=True)
        return tf.ensure_shape(features, feature_shape), tf.ensure_shape(labels, label_shape)

    # Whole chunks first, then the batches left over (the last one possibly partial).
    # Two chunks in flight: one generates (GIL released) while TensorFlow hands out the other.
    # The chunk arrays are 64-byte aligned, so TensorFlow adopts them without a copy, and
    # from_tensor_slices hands out each batch as a slice of them (unbatch would copy, and
    # measured at less than half the rate).
    chunks = tf.data.Dataset.range(source.n_chunks).map(load_chunk, num_parallel_calls=2, deterministic=True)
    chunks = chunks.flat_map(lambda features, labels: tf.data.Dataset.from_tensor_slices((features, labels)))
    first_rest = source.n_chunks * source.per_chunk * shard.count
    rest = tf.data.Dataset.range(first_rest, source.n_batches * shard.count).map(load_batch)
    pipeline = chunks.concatenate(rest).apply(
        tf.data.experimental.assert_cardinality(source.n_batches * shard.count)
    )
    options = tf.data.Options()
    # Batches are index-addressed; no tf.distribute rewrite may re-shard them behind our back.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return pipeline.with_options(options).prefetch(tf.data.AUTOTUNE)


def remembered(produce):
    """`produce(element, *args)`, generated once per element; every pass gets copies (TensorFlow adopts
    an array it is handed without a copy and does not leave it as it was: measured, the second pass of
    handed-out originals read other numbers)."""
    memo = {}

    def again(element, *args):
        key = int(element)
        if key not in memo:
            memo[key] = produce(element, *args)
        return tuple(aligned_copy(a) for a in memo[key])

    return again


def aligned_copy(array: np.ndarray) -> np.ndarray:
    """A copy in 64-byte aligned memory (what TensorFlow adopts without copying again)."""
    copy = aligned_empty(array.shape, array.dtype)
    copy[...] = array
    return copy


def feed(
    strategy: tf.distribute.Strategy,
    worker: Worker,
    ds: KineticsDataset,
    split: str,
    stats: Statistics,
    clock: EpochClock,
    fixed: bool = False,
) -> tf.data.Dataset | tf.distribute.DistributedDataset:
    """One split's pipeline; with several workers, each worker's replicas get their slices of every batch
    (bionn.run checked that the batch splits evenly across the replicas). fixed: kept after a first pass
    when small enough (bionn.data.pipeline.KEEP_BYTES)."""
    if worker.count == 1:
        source = batch_source(ds, split, stats, clock)
        return make_dataset(source, keep=fixed and source.keepable())
    replicas = strategy.num_replicas_in_sync

    def per_worker(context: tf.distribute.InputContext) -> tf.data.Dataset:
        local = replicas // context.num_input_pipelines
        shard = ReplicaShard(first=context.input_pipeline_id * local, count=local, total=replicas)
        source = batch_source(ds, split, stats, clock, shard=shard)
        return make_dataset(source, keep=fixed and source.keepable())

    return strategy.distribute_datasets_from_function(per_worker)


def fit(model, train, validation, *, initial_epoch, epochs, callbacks, verbose) -> None:
    """Keras' fit over the tf.data feeds (the feeds order each epoch themselves: no shuffle)."""
    model.fit(
        train,
        validation_data=validation,
        initial_epoch=initial_epoch,
        epochs=epochs,
        callbacks=callbacks,
        verbose=verbose,
        shuffle=False,
    )


def evaluate(model, feed) -> dict[str, float]:
    return model.evaluate(feed, verbose=0, return_dict=True)


def tensorboard(log_dir: Path) -> keras.callbacks.Callback:
    """Keras' own TensorBoard callback (it writes through tf.summary)."""
    return keras.callbacks.TensorBoard(log_dir=str(log_dir))


def enable_determinism() -> None:
    tf.config.experimental.enable_op_determinism()


def devices() -> list[str]:
    return [d.name for d in tf.config.list_logical_devices()]


def gpu_capabilities() -> list[tuple[int, int]]:
    found = []
    for gpu in tf.config.list_physical_devices("GPU"):
        capability = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        if capability:
            found.append(tuple(capability))
    return found
