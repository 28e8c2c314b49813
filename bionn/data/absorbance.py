"""The absorbance matrix and its SVD features, in NumPy (docs/data-model.md, steps 3 and 4).

The engine (bionn.data.kinetics) never forms D; this module does, for what arrives as a matrix: a
measurement given to bionn-predict, the per-sample reference (bionn.data.reference) and the samples
bionn-generate writes. Vectorised over a leading sample axis.
"""

from __future__ import annotations

import numpy as np

from bionn.data import kinetics


def absorbance(concentrations: np.ndarray, amplitudes: np.ndarray, spectra: np.ndarray) -> np.ndarray:
    """D = C diag(a) S^T, (N, T, n_w), un-normalised, from C (N, T, 4), a (N, 4) and S (N, n_w, 4)."""
    return np.einsum("nts,ns,nws->ntw", concentrations, amplitudes, spectra)


def svd_features(d: np.ndarray, n_components: int, sign_rule: int) -> tuple[np.ndarray, np.ndarray]:
    """(features U_k diag(sigma_k), U_k), both (N, T, k), of D / ||D||_F for each D of (N, T, n_w).

    sign_rule: a kinetics.SIGN_RULES value; `solver` keeps NumPy's signs (not the engine's)."""
    d = d / np.linalg.norm(d, axis=(1, 2), keepdims=True)
    u, sigma, _ = np.linalg.svd(d, full_matrices=False)
    u, sigma = u[:, :, :n_components], sigma[:, :n_components]
    if sign_rule == kinetics.SIGN_RULES["first_positive"]:
        u = u * np.where(u[:, :1, :] < 0, -1.0, 1.0)
    elif sign_rule == kinetics.SIGN_RULES["max_abs_positive"]:
        peak = np.take_along_axis(u, np.abs(u).argmax(axis=1)[:, None, :], axis=1)
        u = u * np.where(peak < 0, -1.0, 1.0)
    return u * sigma[:, None, :], u
