"""R-squared from streamed sums, in NumPy: per output and pooled (no Keras import).

Per output j: R2_j = 1 - SS_res_j / SS_tot_j, SS_tot_j around output j's own mean
over the split (sklearn's r2_score with multioutput="raw_values"). Pooled: one
SS_res over all outputs against SS_tot around the mean of *all* targets (the
older project's `R_squared`). Both accumulate over a whole split, so batching
does not change them.
"""

from __future__ import annotations

import numpy as np


class RSquaredSums:
    """Running per-output sums of y, y^2 and (y - y_hat)^2 over batches of (n, m) arrays."""

    def __init__(self, n_outputs: int):
        self.count = 0
        self.total = np.zeros(n_outputs)
        self.total_sq = np.zeros(n_outputs)
        self.residual_sq = np.zeros(n_outputs)

    def update(self, y_true: np.ndarray, y_pred: np.ndarray) -> None:
        y_true = np.asarray(y_true, dtype=np.float64)
        self.count += len(y_true)
        self.total += y_true.sum(axis=0)
        self.total_sq += (y_true**2).sum(axis=0)
        self.residual_sq += ((y_true - np.asarray(y_pred, dtype=np.float64)) ** 2).sum(axis=0)

    def per_output(self) -> np.ndarray:
        return per_output_from_sums(self.count, self.total, self.total_sq, self.residual_sq)

    def pooled(self) -> float:
        n = self.count * len(self.total)
        ss_tot = self.total_sq.sum() - self.total.sum() ** 2 / max(n, 1)
        return float(1.0 - self.residual_sq.sum() / max(ss_tot, 1e-300))

    def summary(self) -> dict:
        """`r_squared` (pooled), `r2_per_output` (list, label order) and `r2_mean` (their mean)."""
        per_output = self.per_output()
        return {
            "r_squared": self.pooled(),
            "r2_mean": float(per_output.mean()),
            "r2_per_output": [float(v) for v in per_output],
        }


def per_output_from_sums(count, total, total_sq, residual_sq) -> np.ndarray:
    """R2 of each output from its count, sum, sum of squares and residual sum of squares."""
    count = np.asarray(count, dtype=np.float64)
    ss_tot = np.asarray(total_sq, dtype=np.float64) - np.asarray(total, dtype=np.float64) ** 2 / np.maximum(
        count, 1.0
    )
    return 1.0 - np.asarray(residual_sq, dtype=np.float64) / np.maximum(ss_tot, 1e-300)


def r2_per_output(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """R2 of each column of (n, m) arrays."""
    sums = RSquaredSums(np.shape(y_true)[1])
    sums.update(y_true, y_pred)
    return sums.per_output()
