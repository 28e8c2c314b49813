"""Compiled Michaelis-Menten sample engine (the contract is DATA_MODEL.md).

One sample is a pure function of (seed, stream, index): its random numbers come
from a SplitMix64 sequence whose starting state hashes those three integers, so
no sample depends on which batch, shard, thread or process computes it.

Per sample the kernel
1. draws k1, k2, k3, E0, S0, the amplitudes a and the unit spectra S (n_w x 4,
   redrawn while spectra_volume(S) < SPECTRA_MIN_VOLUME);
2. integrates the 2-D reduced system with fixed-step RK4, sub-stepping each
   output interval so that rate * h <= RK4_MAX_RATE_STEP for the fastest rate
   the dataset's ranges allow (error <= ~2e-9), LANES samples side by side;
3. decomposes D = C diag(a) S^T / ||D||_F without forming D: with
   M = C^T C and B = diag(a) S^T / ||D||_F, the right singular vectors of D are
   the eigenvectors of G = B^T M B, features_j = C B v_j (= U_j sigma_j) and
   label row j = M B v_j / sigma_j (= C^T U_j).

A serial, GIL-free kernel serves tf.data's own worker threads; the parallel
kernel runs it on contiguous chunks over all cores for bulk work.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

# Bump when a change alters any generated number: it keys the statistics caches.
ENGINE_VERSION = 1
MECHANISMS = {"textbook": 0, "legacy": 1}
SIGN_RULES = {"first_positive": 0, "max_abs_positive": 1, "solver": 2}
N_SPECIES = 4  # E, S, ES, P
N_KINETIC = 5  # k1, k2, k3, E0, S0
# Spectra whose normalised Gram determinant (spectra_volume) is below this are
# numerically rank-deficient and redrawn (about sigma_min < 1e-6 * sigma_max).
SPECTRA_MIN_VOLUME = 1e-12
# RK4 step bound in units of the fastest rate: global error <= ~2e-9 (measured, BENCHMARKS.md).
RK4_MAX_RATE_STEP = 0.08
# Attempts at a full-rank spectra matrix before giving up (probability ~1e-7 each).
MAX_SPECTRA_ATTEMPTS = 64
# Samples integrated side by side (SIMD lanes x latency hiding).
LANES = 16

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
def _uniform(state, draw, lo, hi):
    """Draw number `draw` of the sample whose state is `state`, uniform in [lo, hi)."""
    z = _mix64(state + (np.uint64(draw) + np.uint64(1)) * _GOLDEN)
    return lo + (hi - lo) * (float(z >> _S11) * _INV_2_53)


@njit(cache=True)
def _jacobi_eigh(a, vecs):
    """Eigen-decompose the symmetric matrix `a` in place (cyclic Jacobi).

    On return the diagonal of `a` holds the eigenvalues and the columns of
    `vecs` the eigenvectors, unsorted.
    """
    n = a.shape[0]
    for i in range(n):
        for j in range(n):
            vecs[i, j] = 1.0 if i == j else 0.0
    for _sweep in range(50):
        off = 0.0
        scale = 0.0
        for i in range(n):
            scale += a[i, i] * a[i, i]
            for j in range(i + 1, n):
                off += a[i, j] * a[i, j]
        if off <= 1e-36 * scale or off == 0.0:
            return
        for p in range(n - 1):
            for q in range(p + 1, n):
                apq = a[p, q]
                if apq == 0.0:
                    continue
                theta = (a[q, q] - a[p, p]) / (2.0 * apq)
                t = 1.0 / (abs(theta) + math.sqrt(theta * theta + 1.0))
                if theta < 0.0:
                    t = -t
                c = 1.0 / math.sqrt(t * t + 1.0)
                s = t * c
                for k in range(n):
                    akp = a[k, p]
                    akq = a[k, q]
                    a[k, p] = c * akp - s * akq
                    a[k, q] = s * akp + c * akq
                for k in range(n):
                    apk = a[p, k]
                    aqk = a[q, k]
                    a[p, k] = c * apk - s * aqk
                    a[q, k] = s * apk + c * aqk
                for k in range(n):
                    vkp = vecs[k, p]
                    vkq = vecs[k, q]
                    vecs[k, p] = c * vkp - s * vkq
                    vecs[k, q] = s * vkp + c * vkq


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
        kinetic[p] = _uniform(state, p, bounds[p, 0], bounds[p, 1])
    for i in range(N_SPECIES):
        amplitudes[i] = _uniform(state, N_KINETIC + i, bounds[6, 0], bounds[6, 1])
    n_w = spectra.shape[0]
    draw = N_KINETIC + N_SPECIES
    for attempt in range(MAX_SPECTRA_ATTEMPTS):
        for i in range(N_SPECIES):
            norm = 0.0
            for w in range(n_w):
                x = _uniform(state, draw, bounds[5, 0], bounds[5, 1])
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


@njit(cache=True)
def _rates(mechanism, y0, y1, k1, k2, k3, e0, s0):
    """Derivatives of the reduced 2-D state.

    textbook: y = (S, ES), E = E0 - ES.  legacy: y = (E, ES), S = S0 - ES.
    """
    if mechanism == 0:
        binding = k1 * (e0 - y1) * y0
        return -binding + k2 * y1, binding - (k2 + k3) * y1
    binding = k1 * y0 * (s0 - y1)
    return -binding + k2 * y1, binding - (k2 + k3) * y1


@njit(cache=True)
def _store_species(mechanism, y0, y1, e0, s0, out):
    if mechanism == 0:  # E + ES = E0, S + ES + P = S0
        out[0] = e0 - y1
        out[1] = y0
        out[2] = y1
        out[3] = s0 - y0 - y1
    else:  # legacy: S + ES = S0, E + ES + P = E0
        out[0] = y0
        out[1] = s0 - y1
        out[2] = y1
        out[3] = e0 - y0 - y1


def rk4_substeps(max_rate, dt):
    """RK4 steps per output interval so that rate * h <= RK4_MAX_RATE_STEP for every sample.

    max_rate bounds k1 * (E0 + S0) + k2 + k3 over the dataset's ranges; using one
    step count for the whole dataset keeps every sample's arithmetic identical
    whichever samples it is integrated beside.
    """
    return max(1, math.ceil(max_rate * dt / RK4_MAX_RATE_STEP))


@njit(cache=True)
def simulate_kinetics(mechanism, kinetic, n_sub, t_start, dt, out_conc):
    """Integrate a group of samples (lanes) onto the grid t_start + dt * n.

    kinetic: (L, 5); out_conc: (L, T, 4). The lanes are independent and advance
    in lock step, so the loop over them vectorises and hides the latency of each
    sample's sequential RK4 chain.
    """
    n_lanes = kinetic.shape[0]
    k1 = kinetic[:, 0].copy()
    k2 = kinetic[:, 1].copy()
    k3 = kinetic[:, 2].copy()
    e0 = kinetic[:, 3].copy()
    s0 = kinetic[:, 4].copy()
    y0 = np.empty(n_lanes)
    y1 = np.zeros(n_lanes)
    for lane in range(n_lanes):
        y0[lane] = s0[lane] if mechanism == 0 else e0[lane]
        _store_species(mechanism, y0[lane], 0.0, e0[lane], s0[lane], out_conc[lane, 0])
    h = dt / n_sub
    for t in range(1, out_conc.shape[1]):
        for _ in range(n_sub):
            for lane in range(n_lanes):
                a, b, c, d, e = k1[lane], k2[lane], k3[lane], e0[lane], s0[lane]
                u0, u1 = y0[lane], y1[lane]
                a0, a1 = _rates(mechanism, u0, u1, a, b, c, d, e)
                b0, b1 = _rates(mechanism, u0 + 0.5 * h * a0, u1 + 0.5 * h * a1, a, b, c, d, e)
                c0, c1 = _rates(mechanism, u0 + 0.5 * h * b0, u1 + 0.5 * h * b1, a, b, c, d, e)
                d0, d1 = _rates(mechanism, u0 + h * c0, u1 + h * c1, a, b, c, d, e)
                y0[lane] = u0 + h / 6.0 * (a0 + 2.0 * b0 + 2.0 * c0 + d0)
                y1[lane] = u1 + h / 6.0 * (a1 + 2.0 * b1 + 2.0 * c1 + d1)
        for lane in range(n_lanes):
            _store_species(mechanism, y0[lane], y1[lane], e0[lane], s0[lane], out_conc[lane, t])


@njit(cache=True)
def _gram_of_species(conc):
    """M = C^T C (4 x 4) with the ten sums kept in registers."""
    m00 = m01 = m02 = m03 = m11 = m12 = m13 = m22 = m23 = m33 = 0.0
    for t in range(conc.shape[0]):
        c0, c1, c2, c3 = conc[t, 0], conc[t, 1], conc[t, 2], conc[t, 3]
        m00 += c0 * c0
        m01 += c0 * c1
        m02 += c0 * c2
        m03 += c0 * c3
        m11 += c1 * c1
        m12 += c1 * c2
        m13 += c1 * c3
        m22 += c2 * c2
        m23 += c2 * c3
        m33 += c3 * c3
    m = np.empty((N_SPECIES, N_SPECIES))
    m[0, 0], m[0, 1], m[0, 2], m[0, 3] = m00, m01, m02, m03
    m[1, 0], m[1, 1], m[1, 2], m[1, 3] = m01, m11, m12, m13
    m[2, 0], m[2, 1], m[2, 2], m[2, 3] = m02, m12, m22, m23
    m[3, 0], m[3, 1], m[3, 2], m[3, 3] = m03, m13, m23, m33
    return m


@njit(cache=True)
def decompose(conc, amplitudes, spectra, sign_rule, out_features, out_labels):
    """SVD features (T, k) and labels (k * 4,) of D = C diag(a) S^T / ||D||_F."""
    n_t = conc.shape[0]
    n_w = spectra.shape[0]
    k = out_features.shape[1]
    m = _gram_of_species(conc)
    b = np.empty((N_SPECIES, n_w))  # diag(a) S^T
    mb = np.zeros((N_SPECIES, n_w))  # M diag(a) S^T
    for i in range(N_SPECIES):
        for w in range(n_w):
            b[i, w] = amplitudes[i] * spectra[w, i]
    for i in range(N_SPECIES):
        for j in range(N_SPECIES):
            for w in range(n_w):
                mb[i, w] += m[i, j] * b[j, w]
    fro2 = 0.0  # ||D||_F^2 = trace(B^T M B)
    for i in range(N_SPECIES):
        for w in range(n_w):
            fro2 += b[i, w] * mb[i, w]
    inv_norm = 1.0 / math.sqrt(fro2)
    g = np.empty((n_w, n_w))  # Gram matrix of the normalised D
    for v in range(n_w):
        for w in range(v, n_w):
            acc = 0.0
            for i in range(N_SPECIES):
                acc += b[i, v] * mb[i, w]
            g[v, w] = acc * inv_norm * inv_norm
            g[w, v] = g[v, w]
    vecs = np.empty((n_w, n_w))
    _jacobi_eigh(g, vecs)
    taken = np.zeros(n_w, dtype=np.bool_)
    weights = np.empty((k, N_SPECIES))  # row j: w_j with D v_j = C w_j (= U_j sigma_j)
    for j in range(k):
        col = -1
        for c in range(n_w):  # next largest eigenvalue
            if not taken[c] and (col < 0 or g[c, c] > g[col, col]):
                col = c
        taken[col] = True
        sigma = math.sqrt(max(g[col, col], 0.0))
        for i in range(N_SPECIES):
            acc = 0.0
            for w in range(n_w):
                acc += b[i, w] * vecs[w, col]
            weights[j, i] = acc * inv_norm
        w0, w1, w2, w3 = weights[j, 0], weights[j, 1], weights[j, 2], weights[j, 3]
        flip = False
        if sign_rule == 0:  # U[0, j] >= 0
            flip = conc[0, 0] * w0 + conc[0, 1] * w1 + conc[0, 2] * w2 + conc[0, 3] * w3 < 0.0
        elif sign_rule == 1:  # the largest-magnitude entry of U[:, j] >= 0
            best = 0.0
            for t in range(n_t):
                x = conc[t, 0] * w0 + conc[t, 1] * w1 + conc[t, 2] * w2 + conc[t, 3] * w3
                if abs(x) > abs(best):
                    best = x
            flip = best < 0.0
        if flip:
            for i in range(N_SPECIES):
                weights[j, i] = -weights[j, i]
        for i in range(N_SPECIES):  # C^T U_j = M w_j / sigma_j
            acc = 0.0
            for q in range(N_SPECIES):
                acc += m[i, q] * weights[j, q]
            out_labels[j * N_SPECIES + i] = acc / sigma
    for t in range(n_t):
        c0, c1, c2, c3 = conc[t, 0], conc[t, 1], conc[t, 2], conc[t, 3]
        for j in range(k):
            out_features[t, j] = (
                c0 * weights[j, 0] + c1 * weights[j, 1] + c2 * weights[j, 2] + c3 * weights[j, 3]
            )


@njit(nogil=True, cache=True)
def generate_serial(
    seed,
    stream,
    indices,
    bounds,
    mechanism,
    t_start,
    dt,
    n_sub,
    sign_rule,
    out_features,
    out_labels,
    out_kinetic,
    out_amplitudes,
    out_spectra,
    out_conc,
):
    """Generate the samples `indices` on this thread; fills every out_* array (first axis = sample).

    out_conc may have zero rows: the concentrations are then kept only in a
    scratch buffer of LANES samples (training does not need them).
    """
    n = indices.shape[0]
    keep_conc = out_conc.shape[0] == n
    scratch = np.empty((0 if keep_conc else LANES, out_features.shape[1], N_SPECIES))
    for lo in range(0, n, LANES):  # group by group, so the concentrations stay in cache
        hi = min(n, lo + LANES)
        conc = out_conc[lo:hi] if keep_conc else scratch[: hi - lo]
        for i in range(lo, hi):
            draw_sample(seed, stream, indices[i], bounds, out_kinetic[i], out_amplitudes[i], out_spectra[i])
        simulate_kinetics(mechanism, out_kinetic[lo:hi], n_sub, t_start, dt, conc)
        for i in range(lo, hi):
            decompose(
                conc[i - lo],
                out_amplitudes[i],
                out_spectra[i],
                sign_rule,
                out_features[i],
                out_labels[i],
            )


@njit(parallel=True, cache=True)
def generate_parallel(
    seed,
    stream,
    indices,
    bounds,
    mechanism,
    t_start,
    dt,
    n_sub,
    sign_rule,
    out_features,
    out_labels,
    out_kinetic,
    out_amplitudes,
    out_spectra,
    out_conc,
    n_chunks,
):
    """generate_serial on all cores: `n_chunks` contiguous chunks of samples, one task each."""
    n = indices.shape[0]
    for c in prange(n_chunks):
        lo = c * n // n_chunks
        hi = (c + 1) * n // n_chunks
        generate_serial(
            seed,
            stream,
            indices[lo:hi],
            bounds,
            mechanism,
            t_start,
            dt,
            n_sub,
            sign_rule,
            out_features[lo:hi],
            out_labels[lo:hi],
            out_kinetic[lo:hi],
            out_amplitudes[lo:hi],
            out_spectra[lo:hi],
            out_conc[lo:hi] if out_conc.shape[0] == n else out_conc[0:0],
        )
