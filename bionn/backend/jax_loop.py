"""Training and evaluation on JAX a chunk at a time: the feed generates chunks of many batches in a
background thread (bionn.data.producer), each chunk goes to the device ahead of use, and one jitted
`lax.scan` runs Keras' own stateless train (or test) step over the chunk's batches.

Keras 3.15's JAX trainer runs even `steps_per_execution` as a Python loop over single steps and
fetches batches one at a time as NumPy; this loop makes one call per chunk instead. Callbacks see
chunk boundaries (`on_train_batch_end` with the chunk's last batch) and epoch boundaries, where the
device state is written back into the model's variables: every callback that saves, evaluates or
stops the training (bionn.nn.callbacks, early stopping, pruning) acts there. Chunk shapes depend
only on the split, so a resumed run computes exactly what an uninterrupted one does.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import jax
import keras
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from bionn.data.pipeline import BatchSource
from bionn.data.producer import Chunk, ChunkProducer, batches_per_chunk
from bionn.pins import require_tested

# Chunks in the producer's ring: one being filled, one on its way to the device, one being trained on,
# and one spare so the producer never waits for the device to finish.
SLOTS = 4


@dataclass(eq=False)
class Feed:
    """One split's batches: its source, and whether they are kept on the device after a first pass (a
    fixed split, small enough: `kept` then holds every chunk's device arrays, in order)."""

    source: BatchSource
    keep: bool = False
    kept: list[tuple] = field(default_factory=list, repr=False)


class Steps:
    """The jitted chunk functions of one compiled model: train (the training state over a chunk's
    batches) and test (the metrics' state over them), each returning its last batch's loss (which the
    caller waits on: the state itself is donated to the next call). Each compiles once per chunk shape."""

    def __init__(self, model: keras.Model):
        self.train = scanned(model.train_step)
        self.test = scanned(model.test_step)


def scanned(step):
    """Keras' stateless `step(state, batch) -> (logs, state)` over a chunk's batches, jitted:
    (state, features, labels) -> (the last batch's loss, state); the state passed in is donated."""

    def chunk(state, features, labels):
        def body(state, batch):
            logs, state = step(state, batch)
            return state, logs["loss"]

        state, losses = jax.lax.scan(body, state, (features, labels))
        return losses[-1], state

    return jax.jit(chunk, donate_argnums=0)


def prepared(model: keras.Model, source: BatchSource) -> Steps:
    """The model's chunk functions, its metrics and optimizer built (Keras builds them lazily from the
    first batch it sees: `_symbolic_build`, on the pinned Keras release)."""
    steps = getattr(model, "_bionn_steps", None)
    if steps is None:
        require_tested("keras")
        shape = (1, *source.ds.feature_shape), (1, source.ds.n_labels)
        model._symbolic_build(data_batch=tuple(np.zeros(s, np.float32) for s in shape))
        steps = model._bionn_steps = Steps(model)
    return steps


def variable_groups(model: keras.Model, train: bool) -> tuple[list, ...]:
    """The model's variables in the order of Keras' stateless train_step (or test_step) state."""
    if train:
        return (
            model.trainable_variables,
            model.non_trainable_variables,
            model.optimizer.variables,
            model.metrics_variables,
        )
    return model.trainable_variables, model.non_trainable_variables, model.metrics_variables


def read_state(model: keras.Model, train: bool) -> tuple[list, ...]:
    return tuple([v.value for v in group] for group in variable_groups(model, train))


def write_state(model: keras.Model, state: tuple[list, ...], train: bool) -> None:
    """Put the device state back into the model's variables (what callbacks and saving read)."""
    for group, values in zip(variable_groups(model, train), state, strict=True):
        for variable, value in zip(group, values, strict=True):
            variable.assign(value)


def data_sharding(batch: int) -> NamedSharding | None:
    """How a chunk (batches, batch, ...) is laid out: split along the batch under DataParallel (when the
    batch divides evenly; a short last batch is replicated), else None (the default device)."""
    distribution = keras.distribution.distribution()
    if distribution is None:
        return None
    mesh = distribution.device_mesh.backend_mesh
    if batch % mesh.size:
        return NamedSharding(mesh, PartitionSpec())
    return NamedSharding(mesh, PartitionSpec(None, distribution.batch_dim_name))


def on_device(chunks: Iterator[Chunk]) -> Iterator[tuple[Chunk, tuple]]:
    """Each chunk with its arrays on the device, sent one chunk ahead of use (double-buffered)."""
    ahead = None
    for chunk in chunks:
        arrays = jax.device_put((chunk.features, chunk.labels), data_sharding(chunk.batch))
        if ahead is not None:
            yield ahead
        ahead = chunk, arrays
    if ahead is not None:
        yield ahead


class Ring:
    """Chunks in flight on the device: a chunk's slot goes back to the producer only once the step that
    read it has finished (on CPU the device array may alias the slot's memory)."""

    def __init__(self):
        self.flight: deque = deque()

    def push(self, chunk: Chunk, result) -> None:
        self.flight.append((chunk, result))
        while len(self.flight) > 1:
            self.pop()

    def pop(self) -> None:
        chunk, result = self.flight.popleft()
        jax.block_until_ready(result)
        chunk.release()

    def drain(self) -> None:
        while self.flight:
            self.pop()


def producer(model: keras.Model, source: BatchSource) -> ChunkProducer:
    """The split's chunk producer, kept on the model between epochs (its buffers are allocated once)."""
    producers = model.__dict__.setdefault("_bionn_producers", {})
    if id(source) not in producers:
        producers[id(source)] = ChunkProducer(source, batches_per_chunk(source), slots=SLOTS)
    return producers[id(source)]


def evaluate(model: keras.Model, feed: Feed) -> dict[str, float]:
    """Loss and metrics of one split (epoch 0's order), as model.evaluate(return_dict=True) names them.
    A kept feed's chunks stay on the device after the first pass (copies: the slots are reused)."""
    steps = prepared(model, feed.source)
    model.reset_metrics()
    state = read_state(model, train=False)
    if feed.kept:
        for features, labels in feed.kept:
            _, state = steps.test(state, features, labels)
    else:
        state = generated_pass(steps, feed, producer(model, feed.source), state)
    write_state(model, state, train=False)
    return {name: float(value) for name, value in model.get_metrics_result().items()}


def generated_pass(steps: Steps, feed: Feed, chunks: ChunkProducer, state: tuple) -> tuple:
    """The test step over a split's chunks as they are generated; a kept feed keeps a copy of each."""
    ring, kept = Ring(), []
    epoch = chunks.epoch(0)
    try:
        for chunk, (features, labels) in on_device(epoch):
            loss, state = steps.test(state, features, labels)
            if feed.keep:  # the copies too must be done before the slot is refilled
                kept.append((features.copy(), labels.copy()))
            ring.push(chunk, (loss, *kept[-1:]))
        ring.drain()
    finally:
        epoch.close()
    if feed.keep:
        feed.kept = kept
        chunks.close()  # its thread would fill the next pass, which the device has already
    return state


def train_epoch(model: keras.Model, steps: Steps, source: BatchSource, epoch: int, callbacks) -> None:
    """One epoch's chunks through the train step; callbacks at each chunk's end; state written back."""
    state = read_state(model, train=True)
    ring = Ring()
    chunks = producer(model, source).epoch(epoch)
    try:
        for chunk, (features, labels) in on_device(chunks):
            callbacks.on_train_batch_begin(chunk.first)
            loss, state = steps.train(state, features, labels)
            ring.push(chunk, loss)
            callbacks.on_train_batch_end(chunk.first + chunk.n - 1, {"loss": loss})
            if model.stop_training:
                break
        ring.drain()
    finally:
        chunks.close()
    write_state(model, state, train=True)


def fit(model, train: Feed, validation: Feed, *, initial_epoch, epochs, callbacks, verbose):
    """model.fit's contract for bionn's callbacks: epochs initial_epoch .. epochs - 1, each ending with
    the validation split's loss and metrics as val_*; stops when a callback sets model.stop_training."""
    steps = prepared(model, train.source)
    callbacks = keras.callbacks.CallbackList(
        callbacks,
        add_history=True,
        add_progbar=verbose != 0,
        verbose=verbose,
        epochs=epochs,
        steps=train.source.n_batches,
        model=model,
    )
    model.stop_training = False
    callbacks.on_train_begin()
    logs = {}
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        callbacks.on_epoch_begin(epoch)
        train_epoch(model, steps, train.source, epoch, callbacks)
        logs = {name: float(value) for name, value in model.get_metrics_result().items()}
        logs |= {f"val_{name}": value for name, value in evaluate(model, validation).items()}
        callbacks.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    producer(model, train.source).close()  # its thread would fill the next epoch's first chunks
    callbacks.on_train_end(logs)
