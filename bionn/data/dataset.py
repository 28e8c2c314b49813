"""Index-addressed Michaelis-Menten datasets: splits, sample order, batch generation.

Sample i of a dataset is a pure function of (dataset config, stream, i). The
splits are fixed, disjoint index ranges [0, n_train), [n_train, n_train + n_val),
[n_train + n_val, n_samples). Validation and test always use stream 0; training
uses stream 0 too, unless `shape.fresh_train_each_epoch` is set, in which case
epoch e trains on stream e (fresh samples, still a pure function of (config, e, j)).

Training order of epoch e: the split is cut into `n_shards` contiguous shards,
interleaved one sample at a time, then passed through a shuffle buffer of
`shuffle_buffer_size` (tf.data's algorithm, seeded by (seed, e)). Validation and
test keep index order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
from numba import njit

from bionn.config.dataset import SPLIT_NAMES, Label, check_dataset, split_sizes
from bionn.data import kinetics
from bionn.data.draws import sample_state, uniform

# Stream number of the order shuffle's random numbers, apart from all sample streams.
_ORDER_STREAM = 2**62


# TensorFlow adopts a returned NumPy array without copying it when its data are
# aligned to this many bytes (Eigen's alignment); np.empty gives only 16.
TF_ALIGNMENT = 64


def aligned_empty(shape: tuple[int, ...], dtype=np.float64) -> np.ndarray:
    """np.empty whose data start on a TF_ALIGNMENT boundary (zero-copy hand-off to TensorFlow)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(nbytes + TF_ALIGNMENT, dtype=np.uint8)
    offset = -raw.ctypes.data % TF_ALIGNMENT
    return raw[offset : offset + nbytes].view(dtype).reshape(shape)


@dataclass
class Samples:
    """A batch of generated samples, float64, un-normalised."""

    index: np.ndarray  # (N,) global sample indices
    features: np.ndarray  # (N, T, k)
    labels: np.ndarray  # (N, 4k)
    kinetic: np.ndarray  # (N, 5): k1, k2, k3, E0, S0
    amplitudes: np.ndarray  # (N, 4)
    spectra: np.ndarray  # (N, n_w, 4)
    concentrations: np.ndarray  # (N, T, 4): E, S, ES, P (0 rows if not requested)


@njit(cache=True)
def _buffer_shuffle(seq, buffer_size, seed, epoch):
    """Order of `seq` after a tf.data-style shuffle buffer, driven by the counter RNG."""
    n = seq.shape[0]
    out = np.empty_like(seq)
    size = min(buffer_size, n)
    buf = seq[:size].copy()
    state = sample_state(seed, _ORDER_STREAM, epoch)
    nxt = size
    for pos in range(n):
        slot = int(uniform(state, pos, 0.0, float(size)))
        slot = min(slot, size - 1)
        out[pos] = buf[slot]
        if nxt < n:
            buf[slot] = seq[nxt]
            nxt += 1
        else:
            size -= 1
            buf[slot] = buf[size]
    return out


class KineticsDataset:
    """A checked dataset config plus everything needed to generate any of its samples."""

    def __init__(self, cfg: Any, source: str = "dataset config"):
        check_dataset(cfg, source)
        self.cfg = cfg
        self.name = str(cfg.name)
        p, shape, sim = cfg.parameters, cfg.shape, cfg.simulation
        self.seed = int(shape.seed)
        self.batch_size = int(shape.batch_size)
        self.n_times = int(sim.n_times)
        self.n_wavelengths = int(sim.n_wavelengths)
        self.n_components = int(sim.n_components)
        self.mechanism = kinetics.MECHANISMS[sim.mechanism]
        self.sign_rule = kinetics.SIGN_RULES[sim.svd_sign]
        self.label = dataset_label(cfg)
        self.t_start = float(sim.t_start)
        self.dt = (float(sim.t_stop) - self.t_start) / (self.n_times - 1)
        self.bounds = np.zeros((9, 2))
        for row, key in enumerate(("k1", "k2", "k3", "E0", "S0", "spectra", "amplitude")):
            self.bounds[row] = (float(p[f"{key}_min"]), float(p[f"{key}_max"]))
        max_total = float(p.E0_max + p.S0_max)
        max_rate = p.k1_max * max_total + p.k2_max + p.k3_max
        # Each sample picks its own RK4 step count; this is the most any sample takes.
        self.n_sub = kinetics.rk4_substeps(float(max_rate), max_total, self.dt)
        sizes = split_sizes(int(shape.n_samples), list(shape.splits))
        starts = np.cumsum((0,) + sizes)
        self.splits = {s: (int(starts[i]), int(starts[i + 1])) for i, s in enumerate(SPLIT_NAMES)}
        self._interleaved: np.ndarray | None = None

    @property
    def time(self) -> np.ndarray:
        return self.t_start + self.dt * np.arange(self.n_times)

    @property
    def feature_shape(self) -> tuple[int, int, int]:
        return (self.n_times, self.n_components, 1)

    @property
    def n_labels(self) -> int:
        return self.n_components * kinetics.N_SPECIES

    def split_size(self, split: str) -> int:
        start, stop = self.splits[split]
        return stop - start

    def stream(self, split: str, epoch: int) -> int:
        """RNG stream of a split in an epoch (only fresh training data changes with the epoch)."""
        return epoch if split == "train" and self.cfg.shape.fresh_train_each_epoch else 0

    def positions_to_indices(self, split: str, start: int, count: int) -> np.ndarray:
        """Global sample indices of positions start..start+count-1 of a split (index order)."""
        lo, hi = self.splits[split]
        if start < 0 or count < 0 or lo + start + count > hi:
            raise ValueError(
                f"positions {start}..{start + count - 1} are outside the {split} split "
                f"of dataset {self.name!r} ({hi - lo} samples)"
            )
        return np.arange(lo + start, lo + start + count, dtype=np.int64)

    def order(self, split: str, epoch: int = 0) -> np.ndarray:
        """Global indices of a split in the order one epoch feeds them."""
        lo, hi = self.splits[split]
        if split != "train":
            return np.arange(lo, hi, dtype=np.int64)
        if self._interleaved is None:
            shards = np.array_split(np.arange(lo, hi, dtype=np.int64), self.cfg.shape.n_shards)
            position = np.concatenate([np.arange(len(s)) for s in shards])
            shard_id = np.concatenate([np.full(len(s), i) for i, s in enumerate(shards)])
            self._interleaved = np.concatenate(shards)[np.lexsort((shard_id, position))]
        buffer = int(self.cfg.shape.shuffle_buffer_size)
        if buffer <= 1:
            return self._interleaved
        return _buffer_shuffle(self._interleaved, buffer, self.seed, epoch)

    def generate(
        self,
        indices: np.ndarray,
        stream: int = 0,
        parallel: bool = True,
        concentrations: bool = True,
        normalise: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> Samples:
        """Generate the samples with these global indices (all cores unless parallel=False).

        concentrations=False skips storing the (N, T, 4) trajectories (then empty),
        which training and statistics do not need. normalise=(mean, scale), both
        (T, k), writes float32 features (x - mean) * scale instead of the raw float64 ones.
        """
        indices = np.ascontiguousarray(indices, dtype=np.int64)
        n, t, k = len(indices), self.n_times, self.n_components
        features = aligned_empty((n, t, k), np.float64 if normalise is None else np.float32)
        scratch = Scratch(self, n, concentrations)
        labels = self.generate_into(indices, features, scratch, stream, parallel, normalise)
        return Samples(
            index=indices,
            features=features,
            labels=labels,
            kinetic=scratch.kinetic,
            amplitudes=scratch.amplitudes,
            spectra=scratch.spectra,
            concentrations=scratch.concentrations,
        )

    def generate_into(
        self,
        indices: np.ndarray,
        features: np.ndarray,
        scratch: Scratch,
        stream: int = 0,
        parallel: bool = True,
        normalise: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> np.ndarray:
        """Generate the samples `indices` (int64, C-contiguous) with their features written in place into
        the caller's `features` (N, T, k), C-contiguous: float32 with normalise=(mean, scale), else float64.
        Everything else goes to the first N rows of `scratch`; returns the labels, scratch.labels[:N]
        (float64, the relative label already divided). Nothing is allocated per sample."""
        n, t, k = len(indices), self.n_times, self.n_components
        dtype = np.dtype(np.float64 if normalise is None else np.float32)
        if (
            (features.shape, features.dtype) != ((n, t, k), dtype)
            or not features.flags.c_contiguous
            or n > scratch.capacity
        ):  # the kernel does not check bounds: a wrong shape would write past the arrays
            raise ValueError(
                f"generate_into: {n} samples need C-contiguous {dtype} features of shape {(n, t, k)} and a "
                f"scratch of at least {n} samples; got {features.dtype} features of shape {features.shape} "
                f"(C-contiguous: {features.flags.c_contiguous}) and a scratch of {scratch.capacity}"
            )
        mean, scale = normalise if normalise is not None else (np.zeros((t, k)), np.ones((t, k)))
        extra = (min(n, 8 * numba.get_num_threads()),) if parallel else ()
        kernel = kinetics.generate_parallel if parallel else kinetics.generate_serial
        spec = (
            self.seed,
            stream,
            self.bounds,
            self.mechanism,
            self.dt,
            self.sign_rule,
            np.ascontiguousarray(mean, dtype=np.float64).reshape(t, k),
            np.ascontiguousarray(scale, dtype=np.float64).reshape(t, k),
        )
        labels, kinetic = scratch.labels[:n], scratch.kinetic[:n]
        conc = scratch.concentrations[:n] if len(scratch.concentrations) else scratch.concentrations
        kernel(
            spec,
            indices,
            (features, labels, kinetic, scratch.amplitudes[:n], scratch.spectra[:n], conc),
            *extra,
        )
        if self.label is Label.relative:  # C^T U_k / (E0 + S0): concentrations relative to the total
            labels /= (kinetic[:, 3] + kinetic[:, 4])[:, None]
        return labels


class Scratch:
    """What a generation call fills besides the features, for up to `capacity` samples: the labels
    (float64, before any cast), kinetic parameters, amplitudes, spectra and, with concentrations=True,
    the (capacity, T, 4) trajectories (else none). A feed reuses one call after call
    (KineticsDataset.generate_into), so generating a chunk allocates nothing per sample."""

    def __init__(self, ds: KineticsDataset, capacity: int, concentrations: bool = False):
        self.capacity = capacity
        self.labels = np.empty((capacity, ds.n_labels))
        self.kinetic = np.empty((capacity, kinetics.N_KINETIC))
        self.amplitudes = np.empty((capacity, kinetics.N_SPECIES))
        self.spectra = np.empty((capacity, ds.n_wavelengths, kinetics.N_SPECIES))
        self.concentrations = np.empty((capacity if concentrations else 0, ds.n_times, kinetics.N_SPECIES))


def compile_kernels(cfg: Any) -> None:
    """Compile the data engine's Numba kernels into their on-disk cache (bionn/data/__pycache__) for every
    signature a run uses: serial and parallel generation of raw (float64) and normalised (float32)
    features, and the training order. scripts/setup.sh calls it once, so that a first run, or several
    test processes at once, load the kernels instead of each compiling them (about a minute on 2 cores)."""
    ds = KineticsDataset(cfg)
    indices = ds.positions_to_indices("train", 0, 4)
    t, k = ds.feature_shape[:2]
    for normalise in (None, (np.zeros((t, k)), np.ones((t, k)))):
        for parallel in (False, True):
            ds.generate(indices, parallel=parallel, normalise=normalise)
    ds.order("train", 0)


def dataset_label(cfg: Any) -> Label:
    """The label of a dataset config (`dataset.label`, seed when absent)."""
    value = cfg.get("label", Label.seed)
    return Label(getattr(value, "value", value))
