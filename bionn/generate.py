"""bionn-generate: write samples of one split of a dataset to an .npz file (un-normalised).

Per sample: k1, k2, k3, E0, S0, spectra, amplitudes, concentrations, the absorbance matrix D =
C diag(a) S^T (`absorbance`, what bionn-predict reads), features and labels; `time` once."""

from __future__ import annotations

import argparse
import sys

import numpy as np
from tqdm import tqdm

from bionn.config.dataset import SPLIT_NAMES, resolve_dataset
from bionn.config.errors import ConfigError
from bionn.data.absorbance import absorbance
from bionn.data.dataset import KineticsDataset
from bionn.io import atomic_save_npz


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bionn-generate", description=__doc__)
    parser.add_argument("--dataset", required=True, help="a name in conf/dataset/ or a YAML file")
    parser.add_argument("--split", required=True, choices=SPLIT_NAMES)
    parser.add_argument("--start", type=int, default=0, help="first position within the split")
    parser.add_argument("--count", type=int, required=True, help="number of samples")
    parser.add_argument("--batch-size", type=int, default=4096, help="samples generated per step")
    parser.add_argument("--out", required=True, help="output .npz file (written atomically)")
    parser.add_argument("--config-dir", default=None, help="conf/ folder holding dataset/")
    return parser.parse_args(argv)


def generate(args: argparse.Namespace) -> dict[str, np.ndarray]:
    """The .npz's arrays by name: args.count samples of args.split of args.dataset from position
    args.start, generated args.batch_size at a time. ConfigError for a bad dataset, count or batch size."""
    ds = KineticsDataset(resolve_dataset(args.dataset, args.config_dir), source=args.dataset)
    if args.count < 1:
        raise ConfigError(f"--count = {args.count} is invalid: must be >= 1")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size = {args.batch_size} is invalid: must be >= 1")
    indices = ds.positions_to_indices(args.split, args.start, args.count)
    n, t, k = args.count, ds.n_times, ds.n_components
    out = {
        "index": indices,
        "k1": np.empty(n),
        "k2": np.empty(n),
        "k3": np.empty(n),
        "E0": np.empty(n),
        "S0": np.empty(n),
        "spectra": np.empty((n, ds.n_wavelengths, 4)),
        "amplitudes": np.empty((n, 4)),
        "time": ds.time,
        "concentrations": np.empty((n, t, 4)),
        "absorbance": np.empty((n, t, ds.n_wavelengths)),
        "features": np.empty((n, t, k, 1)),
        "labels": np.empty((n, 4 * k)),
    }
    with tqdm(total=n, desc=f"{ds.name}/{args.split}", unit="sample", mininterval=1) as bar:
        for lo in range(0, n, args.batch_size):
            hi = min(n, lo + args.batch_size)
            s = ds.generate(indices[lo:hi], ds.stream(args.split, 0))
            for column, name in enumerate(("k1", "k2", "k3", "E0", "S0")):
                out[name][lo:hi] = s.kinetic[:, column]
            out["spectra"][lo:hi] = s.spectra
            out["amplitudes"][lo:hi] = s.amplitudes
            out["concentrations"][lo:hi] = s.concentrations
            out["absorbance"][lo:hi] = absorbance(s.concentrations, s.amplitudes, s.spectra)
            out["features"][lo:hi, :, :, 0] = s.features
            out["labels"][lo:hi] = s.labels
            bar.update(hi - lo)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        arrays = generate(args)
    except (ConfigError, ValueError) as err:
        print(f"bionn-generate: error: {err}", file=sys.stderr)
        return 2
    atomic_save_npz(args.out, **arrays)
    print(f"wrote {args.count} samples of {args.dataset}/{args.split} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
