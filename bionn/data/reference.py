"""Plain per-sample implementation of docs/data-model.md, the yardstick of the engine.

One sample at a time, the way the older code worked: the full 4-species ODE
through SciPy (odeint at its default tolerances, or DOP853 at rtol 1e-12 as the
tight reference), the absorbance matrix built explicitly, numpy's SVD (bionn.data.absorbance). It shares
only the parameter draw with the engine, so tests and benchmarks compare the
simulation and the decomposition, not the random numbers.
"""

from __future__ import annotations

import numpy as np
from scipy.integrate import odeint, solve_ivp

from bionn.data import kinetics
from bionn.data.absorbance import absorbance, svd_features
from bionn.data.dataset import KineticsDataset


def rates(c: np.ndarray, k1: float, k2: float, k3: float, mechanism: int) -> np.ndarray:
    """dC/dt of C = [E, S, ES, P]; mechanism 1 is the older code's variant (docs/data-model.md: legacy)."""
    e, s, es, _ = c
    binding = k1 * e * s
    if mechanism == 0:
        return np.array([-binding + (k2 + k3) * es, -binding + k2 * es, binding - (k2 + k3) * es, k3 * es])
    return np.array([-binding + k2 * es, -binding + (k2 + k3) * es, binding - (k2 + k3) * es, k3 * es])


def reference_sample(ds: KineticsDataset, index: int, stream: int = 0, tight: bool = True) -> dict:
    """One sample: concentrations, features and labels, with the dataset's sign rule."""
    kinetic = np.empty(kinetics.N_KINETIC)
    amplitudes = np.empty(kinetics.N_SPECIES)
    spectra = np.empty((ds.n_wavelengths, kinetics.N_SPECIES))
    kinetics.draw_sample(ds.seed, stream, index, ds.bounds, kinetic, amplitudes, spectra)
    k1, k2, k3, e0, s0 = kinetic
    time = ds.time
    c0 = np.array([e0, s0, 0.0, 0.0])
    if tight:
        sol = solve_ivp(
            lambda t, c: rates(c, k1, k2, k3, ds.mechanism),
            (time[0], time[-1]),
            c0,
            method="DOP853",
            t_eval=time,
            rtol=1e-12,
            atol=1e-14,
        )
        conc = sol.y.T
    else:
        conc = odeint(lambda c, t: rates(c, k1, k2, k3, ds.mechanism), c0, time)
    d = absorbance(conc[None], amplitudes[None], spectra[None])
    features, u = (x[0] for x in svd_features(d, ds.n_components, ds.sign_rule))
    return {
        "kinetic": kinetic,
        "amplitudes": amplitudes,
        "spectra": spectra,
        "concentrations": conc,
        "features": features,
        "labels": (conc.T @ u).T.reshape(-1),
    }
