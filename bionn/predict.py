"""bionn-predict RUN_DIR INPUT: a finished run's network applied to absorbance matrices, labels to CSV.

INPUT is an .npz file with `absorbance` (T x n_w, or N x T x n_w: N samples; bionn-generate writes it)
and optionally `E0` and `S0` (N values), or a CSV file holding one T x n_w matrix (an optional header
line is skipped). T and n_w are the run's dataset.simulation.n_times and n_wavelengths. The features
are computed as the data engine defines them (bionn.data.absorbance), then fed to the run's inference
model (bionn.nn.inference). The CSV has one row per sample: `sample`, then every output by name
(`c<j>_<species>`: component j, species E, S, ES or P). With the relative label (dataset.label=relative)
the outputs are relative to E0 + S0; given both (--e0/--s0, or in the .npz) the absolute values follow
as `abs_c<j>_<species>` = relative x (E0 + S0). Everything is checked before anything is written.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from bionn.backend import add_option, current, select
from bionn.config.dataset import DatasetConfig, Label
from bionn.config.errors import ConfigError
from bionn.io import atomic_write_bytes
from bionn.run_folder import RunFolder, RunFolderError

SPECIES = ("E", "S", "ES", "P")


class InputError(ValueError):
    """An input file that is not what the run's model takes; names the file, what was expected and given."""


def output_names(n_components: int) -> list[str]:
    """Output 4 j + i is component j + 1 and species i (docs/data-model.md, "Features and label")."""
    return [f"c{j + 1}_{s}" for j in range(n_components) for s in SPECIES]


def run_dataset(folder: RunFolder) -> Any:
    """The run's dataset config (through the schema), from its info.json."""
    dataset = ((folder.info() or {}).get("config") or {}).get("dataset")
    if dataset is None:
        raise RunFolderError(f"{folder / 'info.json'}: expected the run's config with a dataset, found none")
    return OmegaConf.merge(OmegaConf.structured(DatasetConfig), dataset)


def read_input(path: Path, n_times: int, n_wavelengths: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(absorbance (N, T, n_w) float64, {"E0": (N,), "S0": (N,)} when the .npz holds them)."""
    expected = f"({n_times}, {n_wavelengths}) for one sample or (N, {n_times}, {n_wavelengths}) for N"
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty; expected an absorbance matrix of shape {expected}")
    totals: dict[str, np.ndarray] = {}
    if path.suffix == ".npz":
        try:
            with np.load(path) as data:
                if "absorbance" not in data:
                    raise InputError(
                        f"{path}: expected an array 'absorbance' of shape {expected}, found "
                        f"{', '.join(data.files) or 'no arrays'}"
                    )
                d = np.asarray(data["absorbance"], dtype=np.float64)
                totals = {
                    k: np.asarray(data[k], dtype=np.float64).reshape(-1) for k in ("E0", "S0") if k in data
                }
        except (OSError, ValueError) as err:
            if isinstance(err, InputError):
                raise
            raise InputError(f"{path}: not a readable .npz file ({err})") from None
    elif path.suffix == ".csv":
        d = _read_csv(path, expected)
    else:
        raise InputError(f"{path}: expected a .npz or .csv file, given {path.suffix or 'no suffix'}")
    if d.ndim == 2:
        d = d[None]
    if d.ndim != 3 or d.shape[1:] != (n_times, n_wavelengths) or d.shape[0] == 0:
        raise InputError(
            f"{path}: absorbance has shape {d.shape}; the run's dataset takes {expected} "
            f"(dataset.simulation.n_times = {n_times} time points x n_wavelengths = {n_wavelengths})"
        )
    bad = ~np.isfinite(d)
    if bad.any():
        n, t, w = np.argwhere(bad)[0]
        raise InputError(
            f"{path}: absorbance holds {int(bad.sum())} NaN or infinite value(s) (the first at sample {n}, "
            f"time point {t}, wavelength {w}); expected finite numbers"
        )
    zero = np.flatnonzero(~np.any(d, axis=(1, 2)))
    if zero.size:
        raise InputError(f"{path}: sample {zero[0]} is all zeros; expected a non-zero absorbance matrix")
    for key, values in totals.items():
        if values.shape != (len(d),) or not np.all(np.isfinite(values)):
            raise InputError(
                f"{path}: {key} must hold {len(d)} finite values (one per sample), found {values}"
            )
    return d, totals


def _read_csv(path: Path, expected: str) -> np.ndarray:
    text = path.read_text()
    lines = [line for line in text.splitlines() if line.strip()]
    if lines:
        try:
            [float(x) for x in lines[0].split(",")]
        except ValueError:
            lines = lines[1:]  # a header line
    if not lines:
        raise InputError(f"{path}: holds no numbers; expected one absorbance matrix of shape {expected}")
    try:
        return np.loadtxt(io.StringIO("\n".join(lines)), delimiter=",", ndmin=2)
    except ValueError as err:
        raise InputError(f"{path}: not a matrix of numbers separated by commas ({err})") from None


def matrix_features(d: np.ndarray, n_components: int, sign_rule: int) -> np.ndarray:
    """The features (N, T, k) of absorbance matrices d (N, T, n_w), none of them all zeros. Each matrix
    is first divided by its largest |value|: the features are those of D / ||D||_F, which that leaves
    unchanged, and ||D||_F of finite values near 1e308 would overflow."""
    from bionn.data.absorbance import svd_features

    return svd_features(d / np.abs(d).max(axis=(1, 2), keepdims=True), n_components, sign_rule)[0]


def predict(
    run_dir: Path, input_path: Path, which: str, e0: float | None, s0: float | None
) -> tuple[str, str]:
    """(CSV text, a note for the user); nothing is written."""
    from bionn.data.dataset import KineticsDataset
    from bionn.data.kinetics import SIGN_RULES
    from bionn.trained import check_usable, load_model

    folder = RunFolder(run_dir)
    check_usable(folder, which)
    ds = KineticsDataset(run_dataset(folder), source=str(folder / "info.json"))
    if ds.sign_rule == SIGN_RULES["solver"]:
        raise InputError(
            f"{run_dir}: its dataset has simulation.svd_sign = solver (the engine's eigen-solver signs), "
            "which a matrix cannot reproduce; only first_positive and max_abs_positive models can predict"
        )
    d, totals = read_input(input_path, ds.n_times, ds.n_wavelengths)
    if (e0 is None) != (s0 is None):
        raise InputError("--e0 and --s0 go together: give both or neither")
    if e0 is not None:
        totals = {"E0": np.full(len(d), e0), "S0": np.full(len(d), s0)}
    features = matrix_features(d, ds.n_components, ds.sign_rule)
    model = load_model(run_dir, which)
    labels = model.predict(features[..., None], batch_size=256, verbose=0).astype(np.float64)
    names = output_names(ds.n_components)
    columns = {"sample": np.arange(len(d)), **totals}
    columns.update({name: labels[:, i] for i, name in enumerate(names)})
    note = f"{len(d)} sample(s), the {which} weights of {run_dir}"
    if ds.label is Label.relative:
        if totals:
            total = totals["E0"] + totals["S0"]
            columns.update({f"abs_{name}": labels[:, i] * total for i, name in enumerate(names)})
            note += "; abs_* = relative x (E0 + S0)"
        else:
            note += (
                "; the outputs are relative to E0 + S0 (dataset.label=relative): absolute = relative x "
                "(E0 + S0); give --e0 and --s0 (or E0 and S0 in the .npz) to have them computed"
            )
    return _csv(columns), note


def _csv(columns: dict[str, np.ndarray]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in zip(*columns.values(), strict=True):
        writer.writerow([int(v) if isinstance(v, np.integer) else repr(float(v)) for v in row])
    return buffer.getvalue()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bionn-predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a finished run folder")
    parser.add_argument(
        "input", type=Path, help="absorbance: .npz (one or many samples) or .csv (one matrix)"
    )
    parser.add_argument(
        "--which", choices=("best", "last"), default="best", help="the weights (default best)"
    )
    parser.add_argument(
        "--out", type=Path, help="the CSV to write (default: INPUT's name + .predictions.csv)"
    )
    parser.add_argument("--e0", type=float, help="initial enzyme concentration of every sample")
    parser.add_argument("--s0", type=float, help="initial substrate concentration of every sample")
    add_option(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from bionn.console import quiet_tensorflow

    args = parse_args(argv)
    quiet_tensorflow()  # before TensorFlow is imported
    try:
        select(args.backend)  # before Keras is imported
        current()  # the backend's own setup (under jax: Keras keeps TensorFlow out)
    except ConfigError as err:
        print(f"bionn-predict: error: {err}", file=sys.stderr)
        return 2
    from bionn.trained import ModelUnavailable

    out = args.out or args.input.with_name(args.input.name + ".predictions.csv")
    try:
        text, note = predict(args.run_dir, args.input, args.which, args.e0, args.s0)
    except (InputError, ModelUnavailable, RunFolderError, ConfigError) as err:
        print(f"bionn-predict: error: {err} (nothing was written)", file=sys.stderr)
        return 2
    atomic_write_bytes(out, text.encode())
    print(f"wrote {out}: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
