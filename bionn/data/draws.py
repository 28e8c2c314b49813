"""What one sample draws: its SplitMix64 random stream, a pure function of (seed, stream, index), and
from it the kinetic parameters, amplitudes and unit spectra (docs/data-model.md)."""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from bionn.config.dataset import N_SPECIES

N_KINETIC = 5  # k1, k2, k3, E0, S0
# Spectra whose normalised Gram determinant (spectra_volume) is below this are
# numerically rank-deficient and redrawn (about sigma_min < 1e-6 * sigma_max).
SPECTRA_MIN_VOLUME = 1e-12
# Attempts at a full-rank spectra matrix before giving up (probability ~1e-7 each).
MAX_SPECTRA_ATTEMPTS = 64

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)
_INV_2_53 = 1.0 / 9007199254740992.0


@njit(cache=True)
def _mix64(z):
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return z ^ (z >> _S31)


@njit(cache=True)
def sample_state(seed, stream, index):
    """Starting SplitMix64 state of one sample (all arguments are non-negative ints)."""
    key = _mix64(np.uint64(seed) * _GOLDEN + _mix64(np.uint64(stream) + _GOLDEN))
    return _mix64(key ^ _mix64(np.uint64(index)))


@njit(cache=True)
def uniform(state, draw, lo, hi):
    """Draw number `draw` of the sample whose state is `state`, uniform in [lo, hi)."""
    z = _mix64(state + (np.uint64(draw) + np.uint64(1)) * _GOLDEN)
    return lo + (hi - lo) * (float(z >> _S11) * _INV_2_53)


@njit(cache=True)
def spectra_volume(spectra):
    """det(G) / (tr(G) / m)^m for G the m x m Gram matrix of the spectra's smaller side.

    1 for orthonormal spectra, 0 for rank-deficient ones (the product of the
    squared singular values over their mean, to the m-th power).
    """
    n_w = spectra.shape[0]
    m = min(n_w, N_SPECIES)
    g = np.empty((m, m))
    trace = 0.0
    for i in range(m):
        for j in range(m):
            acc = 0.0
            if n_w >= N_SPECIES:
                for w in range(n_w):
                    acc += spectra[w, i] * spectra[w, j]
            else:
                for s in range(N_SPECIES):
                    acc += spectra[i, s] * spectra[j, s]
            g[i, j] = acc
        trace += g[i, i]
    if trace <= 0.0:
        return 0.0
    det = 1.0  # Gaussian elimination with partial pivoting
    for c in range(m):
        p = c
        for r in range(c + 1, m):
            if abs(g[r, c]) > abs(g[p, c]):
                p = r
        if g[p, c] == 0.0:
            return 0.0
        if p != c:
            for q in range(m):
                g[c, q], g[p, q] = g[p, q], g[c, q]
            det = -det
        det *= g[c, c]
        for r in range(c + 1, m):
            f = g[r, c] / g[c, c]
            for q in range(c, m):
                g[r, q] -= f * g[c, q]
    return det / (trace / m) ** m


@njit(cache=True)
def draw_sample(seed, stream, index, bounds, kinetic, amplitudes, spectra):
    """Fill kinetic (k1, k2, k3, E0, S0), amplitudes (4,) and unit spectra (n_w, 4).

    bounds: (9, 2) rows k1, k2, k3, E0, S0, spectra, amplitude, unused, unused
    as (min, max). Draw numbers: 0-4 kinetic, 5-8 amplitudes, 9+ the spectra
    attempts (4 * n_w draws each). Returns the number of spectra attempts.
    """
    state = sample_state(seed, stream, index)
    for p in range(N_KINETIC):
        kinetic[p] = uniform(state, p, bounds[p, 0], bounds[p, 1])
    for i in range(N_SPECIES):
        amplitudes[i] = uniform(state, N_KINETIC + i, bounds[6, 0], bounds[6, 1])
    n_w = spectra.shape[0]
    draw = N_KINETIC + N_SPECIES
    for attempt in range(MAX_SPECTRA_ATTEMPTS):
        for i in range(N_SPECIES):
            norm = 0.0
            for w in range(n_w):
                x = uniform(state, draw, bounds[5, 0], bounds[5, 1])
                draw += 1
                spectra[w, i] = x
                norm += x * x
            norm = math.sqrt(norm)
            if norm > 0.0:
                for w in range(n_w):
                    spectra[w, i] /= norm
        if spectra_volume(spectra) >= SPECTRA_MIN_VOLUME:
            return attempt + 1
    return MAX_SPECTRA_ATTEMPTS + 1
