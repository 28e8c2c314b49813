"""Choice of tf.distribute strategy: all local GPUs, else the CPU (optionally split into replicas)."""

from __future__ import annotations

import tensorflow as tf

from bionn.config.schema import ConfigError


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


def make_strategy(cpu_replicas: int = 1) -> tf.distribute.Strategy:
    """MirroredStrategy over every local GPU; without GPUs over `cpu_replicas` logical CPUs.

    The global batch is the dataset's batch_size, split evenly across the replicas.
    """
    if tf.config.list_physical_devices("GPU"):
        return tf.distribute.MirroredStrategy()
    split_cpu(cpu_replicas)
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:cpu_replicas]
    return tf.distribute.MirroredStrategy(devices=devices)
