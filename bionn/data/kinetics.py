"""Compiled Michaelis-Menten sample engine (the contract is docs/data-model.md).

One sample is a pure function of (seed, stream, index): its random numbers come
from a SplitMix64 sequence whose starting state hashes those three integers, so
no sample depends on which batch, shard, thread or process computes it.

Per sample the kernel
1. draws k1, k2, k3, E0, S0, the amplitudes a and the unit spectra S (n_w x 4,
   redrawn while spectra_volume(S) < SPECTRA_MIN_VOLUME);
2. integrates the 2-D reduced system with fixed-step RK4, splitting each output
   interval into the fewest steps that keep the sample's own global error near
   RK4_TOLERANCE (rk4_substeps); samples with equal step counts run LANES side by side;
3. decomposes D = C diag(a) S^T / ||D||_F without forming D or C: C = Y P is
   affine in the reduced state, Y = [1, y0, y1] (T x 3), so D = Y Q with
   Q = P diag(a) S^T / ||D||_F. R = Y^T Y = L L^T comes from five sums kept while
   integrating; the singular values of D are those of K = L^T Q, and the 3 x 3
   eigenproblem K K^T = W diag(sigma^2) W^T gives features_j = Y Q K^T W_j / sigma_j
   (= U_j sigma_j) and label row j = P^T L W_j (= C^T U_j).

A serial, GIL-free kernel serves tf.data's own worker threads; the parallel
kernel runs it on contiguous chunks over all cores for bulk work.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from bionn.config.dataset import N_SPECIES, Mechanism, SignRule

# The kernels' integer codes of the config's choices.
MECHANISMS = {Mechanism.textbook: 0, Mechanism.legacy: 1}
SIGN_RULES = {SignRule.first_positive: 0, SignRule.max_abs_positive: 1, SignRule.solver: 2}
N_KINETIC = 5  # k1, k2, k3, E0, S0
# Spectra whose normalised Gram determinant (spectra_volume) is below this are
# numerically rank-deficient and redrawn (about sigma_min < 1e-6 * sigma_max).
SPECTRA_MIN_VOLUME = 1e-12
# RK4's global error on this system, measured against DOP853 (rtol 1e-12) over the test
# datasets, is at most about RK4_ERROR_COEF * (rate * h)^4 * (E0 + S0).
RK4_ERROR_COEF = 3e-4
# Global error each sample's step is chosen for (the tests allow 1e-8).
RK4_TOLERANCE = 2e-9
# Attempts at a full-rank spectra matrix before giving up (probability ~1e-7 each).
MAX_SPECTRA_ATTEMPTS = 64
# Samples integrated side by side (SIMD lanes x latency hiding); groups are padded to it.
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
def _rotate(app, aqq, apq, arp, arq):
    """One Jacobi rotation zeroing a[p, q] of a symmetric 3 x 3 matrix (r the third index).

    Returns the new a[p, p], a[q, q], a[r, p], a[r, q] and the rotation's (c, s).
    """
    theta = (aqq - app) / (2.0 * apq)
    t = 1.0 / (abs(theta) + math.sqrt(theta * theta + 1.0))
    if theta < 0.0:
        t = -t
    c = 1.0 / math.sqrt(t * t + 1.0)
    s = t * c
    return app - t * apq, aqq + t * apq, c * arp - s * arq, s * arp + c * arq, c, s


@njit(cache=True)
def _eigh3(a, vecs):
    """Eigen-decompose the symmetric 3 x 3 matrix `a` (cyclic Jacobi, held in registers).

    On return the diagonal of `a` holds the eigenvalues and the columns of
    `vecs` the eigenvectors, unsorted.
    """
    a00, a11, a22, a01, a02, a12 = a[0, 0], a[1, 1], a[2, 2], a[0, 1], a[0, 2], a[1, 2]
    v00, v01, v02, v10, v11, v12, v20, v21, v22 = 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0
    for _sweep in range(50):
        off = a01 * a01 + a02 * a02 + a12 * a12
        if off <= 1e-36 * (a00 * a00 + a11 * a11 + a22 * a22) or off == 0.0:
            break
        if a01 != 0.0:  # (p, q, r) = (0, 1, 2)
            a00, a11, a02, a12, c, s = _rotate(a00, a11, a01, a02, a12)
            a01 = 0.0
            v00, v01 = c * v00 - s * v01, s * v00 + c * v01
            v10, v11 = c * v10 - s * v11, s * v10 + c * v11
            v20, v21 = c * v20 - s * v21, s * v20 + c * v21
        if a02 != 0.0:  # (0, 2, 1)
            a00, a22, a01, a12, c, s = _rotate(a00, a22, a02, a01, a12)
            a02 = 0.0
            v00, v02 = c * v00 - s * v02, s * v00 + c * v02
            v10, v12 = c * v10 - s * v12, s * v10 + c * v12
            v20, v22 = c * v20 - s * v22, s * v20 + c * v22
        if a12 != 0.0:  # (1, 2, 0)
            a11, a22, a01, a02, c, s = _rotate(a11, a22, a12, a01, a02)
            a12 = 0.0
            v01, v02 = c * v01 - s * v02, s * v01 + c * v02
            v11, v12 = c * v11 - s * v12, s * v11 + c * v12
            v21, v22 = c * v21 - s * v22, s * v21 + c * v22
    a[0, 0], a[1, 1], a[2, 2] = a00, a11, a22
    vecs[0, 0], vecs[0, 1], vecs[0, 2] = v00, v01, v02
    vecs[1, 0], vecs[1, 1], vecs[1, 2] = v10, v11, v12
    vecs[2, 0], vecs[2, 1], vecs[2, 2] = v20, v21, v22


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
def rk4_substeps(rate, total, dt):
    """RK4 steps per output interval that keep the global error of a sample near RK4_TOLERANCE.

    rate = k1 * (E0 + S0) + k2 + k3 bounds the Jacobian of the reduced system and
    total = E0 + S0 scales the concentrations. Both are the sample's own, so its
    step count, and with it every bit of its trajectory, depend on that sample alone.
    """
    per_rate = math.sqrt(math.sqrt(RK4_ERROR_COEF * total / RK4_TOLERANCE))  # 1 / (rate * h)
    return max(1, math.ceil(rate * dt * per_rate))


@njit(cache=True)
def _reduced_start(mechanism, e0, s0):
    """(cap, y0(0)) of the reduced system, y1(0) = 0 (see _rates).

    textbook: y = (S, ES), E = E0 - ES, cap = E0.  legacy: y = (E, ES),
    S = S0 - ES, cap = S0: the same equations with E0 and S0 swapped.
    """
    return (e0, s0) if mechanism == 0 else (s0, e0)


@njit(cache=True)
def _affine_species(mechanism, e0, s0, p):
    """Fill p (3, 4) with C(t) = [1, y0(t), y1(t)] @ p, the species as an affine map of y."""
    p[:] = 0.0
    if mechanism == 0:  # E + ES = E0, S + ES + P = S0: C = (E0 - y1, y0, y1, S0 - y0 - y1)
        p[0, 0], p[0, 3] = e0, s0
        p[1, 1], p[1, 3] = 1.0, -1.0
        p[2, 0], p[2, 2], p[2, 3] = -1.0, 1.0, -1.0
    else:  # legacy: S + ES = S0, E + ES + P = E0: C = (y0, S0 - y1, y1, E0 - y0 - y1)
        p[0, 1], p[0, 3] = s0, e0
        p[1, 0], p[1, 3] = 1.0, -1.0
        p[2, 1], p[2, 2], p[2, 3] = -1.0, 1.0, -1.0


@njit(cache=True)
def _store_species(p, y, out):
    """out (T, 4) = C(t) = [1, y0(t), y1(t)] @ p from the reduced state y (2, T)."""
    for t in range(y.shape[1]):
        for i in range(N_SPECIES):
            out[t, i] = p[0, i] + p[1, i] * y[0, t] + p[2, i] * y[1, t]


@njit(cache=True)
def _rates(y0, y1, k1, k2, k23, cap):
    """dy0/dt = k2 y1 - b, dy1/dt = b - (k2 + k3) y1 with binding b = k1 (cap - y1) y0; k23 = k2 + k3."""
    binding = k1 * (cap - y1) * y0
    return k2 * y1 - binding, binding - k23 * y1


@njit(cache=True)
def simulate_kinetics(mechanism, kinetic, n_sub, dt, out_y, out_sums):
    """Integrate a group of samples (lanes) with n_sub RK4 steps per output interval dt.

    kinetic: (L, 5). Fills out_y (L, 2, T) with the reduced state on the grid and
    out_sums (5, L) with its sums over the grid: y0, y1, y0^2, y0 y1, y1^2.
    The lanes advance in lock step, half an RK4 step (two stages) per loop over
    them: short independent work per lane that vectorises, where a whole step per
    lane would be one dependency chain too long to overlap.
    """
    n_lanes, n_t = kinetic.shape[0], out_y.shape[2]
    k1 = kinetic[:, 0].copy()
    k2 = kinetic[:, 1].copy()
    k23 = kinetic[:, 1] + kinetic[:, 2]
    cap = np.empty(n_lanes)
    y0 = np.empty(n_lanes)
    y1 = np.zeros(n_lanes)
    z0 = np.empty(n_lanes)  # input of the third stage
    z1 = np.empty(n_lanes)
    acc0 = np.empty(n_lanes)  # first two slopes, weighted 1 and 2
    acc1 = np.empty(n_lanes)
    sums = np.zeros((5, n_lanes))
    for lane in range(n_lanes):
        cap[lane], y0[lane] = _reduced_start(mechanism, kinetic[lane, 3], kinetic[lane, 4])
    h = dt / n_sub
    hh = 0.5 * h
    h6 = h / 6.0
    for t in range(n_t):
        if t > 0:
            for _ in range(n_sub):
                for lane in range(n_lanes):
                    u0, u1 = y0[lane], y1[lane]
                    p1, p2, p3, p4 = k1[lane], k2[lane], k23[lane], cap[lane]
                    a0, a1 = _rates(u0, u1, p1, p2, p3, p4)
                    b0, b1 = _rates(u0 + hh * a0, u1 + hh * a1, p1, p2, p3, p4)
                    acc0[lane] = a0 + 2.0 * b0
                    acc1[lane] = a1 + 2.0 * b1
                    z0[lane] = u0 + hh * b0
                    z1[lane] = u1 + hh * b1
                for lane in range(n_lanes):
                    u0, u1 = y0[lane], y1[lane]
                    p1, p2, p3, p4 = k1[lane], k2[lane], k23[lane], cap[lane]
                    c0, c1 = _rates(z0[lane], z1[lane], p1, p2, p3, p4)
                    d0, d1 = _rates(u0 + h * c0, u1 + h * c1, p1, p2, p3, p4)
                    y0[lane] = u0 + h6 * (acc0[lane] + 2.0 * c0 + d0)
                    y1[lane] = u1 + h6 * (acc1[lane] + 2.0 * c1 + d1)
        for lane in range(n_lanes):
            u0, u1 = y0[lane], y1[lane]
            sums[0, lane] += u0
            sums[1, lane] += u1
            sums[2, lane] += u0 * u0
            sums[3, lane] += u0 * u1
            sums[4, lane] += u1 * u1
        for lane in range(n_lanes):
            out_y[lane, 0, t] = y0[lane]
            out_y[lane, 1, t] = y1[lane]
    out_sums[:] = sums


@njit(cache=True)
def decompose(
    y,
    sums,
    mechanism,
    e0,
    s0,
    amplitudes,
    spectra,
    sign_rule,
    feature_mean,
    feature_scale,
    out_features,
    out_labels,
    work,
):
    """SVD features (T, k) and labels (k * 4,) of D = C diag(a) S^T / ||D||_F.

    y: (2, T) reduced state, sums: its five sums (simulate_kinetics);
    work: (6, 3, max(4, n_w)) scratch. Features are written as (x - feature_mean) * feature_scale.
    With C = Y p, Y = [1, y0, y1], R = Y^T Y = L L^T (Cholesky) and
    Q = p diag(a) S^T / ||D||_F, D = Y Q has the singular values of K = L^T Q:
    K K^T = W diag(sigma^2) W^T (3 x 3 Jacobi) gives features_j = Y Q K^T W_j / sigma_j
    (= U_j sigma_j) and label row j = p^T L W_j (= C^T U_j).
    """
    n_t, n_w, k = y.shape[1], spectra.shape[0], out_features.shape[1]
    p = work[0, :, :N_SPECIES]
    q = work[1, :, :n_w]
    kmat = work[2, :, :n_w]  # K
    gram = work[3, :, :3]  # K K^T, then its eigenvalues on the diagonal
    vecs = work[4, :, :3]  # W
    _affine_species(mechanism, e0, s0, p)
    for r in range(3):
        for w in range(n_w):
            acc = 0.0
            for i in range(N_SPECIES):
                acc += p[r, i] * amplitudes[i] * spectra[w, i]
            q[r, w] = acc
    # L L^T = R = [[T, sum y0, sum y1], [., sum y0^2, sum y0 y1], [., ., sum y1^2]] (Cholesky);
    # a pivot rounded below zero (rank-deficient R, e.g. T = 2) becomes 0.
    l00 = math.sqrt(float(n_t))
    l10 = sums[0] / l00
    l20 = sums[1] / l00
    l11 = math.sqrt(max(sums[2] - l10 * l10, 0.0))
    l21 = (sums[3] - l20 * l10) / l11 if l11 > 0.0 else 0.0
    l22 = math.sqrt(max(sums[4] - l20 * l20 - l21 * l21, 0.0))
    fro2 = 0.0  # ||D||_F^2 = ||L^T Q||_F^2
    for w in range(n_w):
        x0 = l00 * q[0, w] + l10 * q[1, w] + l20 * q[2, w]
        x1 = l11 * q[1, w] + l21 * q[2, w]
        x2 = l22 * q[2, w]
        kmat[0, w], kmat[1, w], kmat[2, w] = x0, x1, x2
        fro2 += x0 * x0 + x1 * x1 + x2 * x2
    inv_norm = 1.0 / math.sqrt(fro2)
    for r in range(3):
        for w in range(n_w):
            q[r, w] *= inv_norm
            kmat[r, w] *= inv_norm
    for r in range(3):
        for c in range(r, 3):
            acc = 0.0
            for w in range(n_w):
                acc += kmat[r, w] * kmat[c, w]
            gram[r, c] = acc
            gram[c, r] = acc
    _eigh3(gram, vecs)
    coef = work[5, :k, :3]  # features_j(t) = coef_j . (1, y0(t), y1(t))
    taken = 0  # bit mask of the eigenpairs used
    for j in range(k):
        col = -1
        for c in range(3):  # next largest eigenvalue
            if not taken & (1 << c) and (col < 0 or gram[c, c] > gram[col, col]):
                col = c
        taken |= 1 << col
        sigma = math.sqrt(max(gram[col, col], 0.0))
        w0, w1, w2 = vecs[0, col], vecs[1, col], vecs[2, col]
        for r in range(3):
            acc = 0.0
            for w in range(n_w):
                acc += q[r, w] * (kmat[0, w] * w0 + kmat[1, w] * w1 + kmat[2, w] * w2)
            coef[j, r] = acc / sigma
        flip = False
        if sign_rule == 0:  # U[0, j] >= 0
            flip = coef[j, 0] + coef[j, 1] * y[0, 0] + coef[j, 2] * y[1, 0] < 0.0
        elif sign_rule == 1:  # the largest-magnitude entry of U[:, j] >= 0
            best = 0.0
            for t in range(n_t):
                x = coef[j, 0] + coef[j, 1] * y[0, t] + coef[j, 2] * y[1, t]
                if abs(x) > abs(best):
                    best = x
            flip = best < 0.0
        if flip:
            w0, w1, w2 = -w0, -w1, -w2
            for r in range(3):
                coef[j, r] = -coef[j, r]
        lw0 = l00 * w0  # L W_j
        lw1 = l10 * w0 + l11 * w1
        lw2 = l20 * w0 + l21 * w1 + l22 * w2
        for i in range(N_SPECIES):
            out_labels[j * N_SPECIES + i] = p[0, i] * lw0 + p[1, i] * lw1 + p[2, i] * lw2
    _features(coef, y[0], y[1], feature_mean, feature_scale, out_features)


@njit(cache=True)
def _features(coef, y0, y1, mean, scale, out):
    """out[t, j] = (coef[j] . (1, y0[t], y1[t]) - mean[t, j]) * scale[t, j].

    mean 0 and scale 1 give the raw features exactly; the statistics' mean and
    1 / (std + eps) give the normalised ones in one pass (out may be float32).
    """
    if out.shape[1] == 3:  # the usual k: coefficients held in registers, one pass over t
        a0, b0, c0 = coef[0, 0], coef[0, 1], coef[0, 2]
        a1, b1, c1 = coef[1, 0], coef[1, 1], coef[1, 2]
        a2, b2, c2 = coef[2, 0], coef[2, 1], coef[2, 2]
        for t in range(out.shape[0]):
            out[t, 0] = (a0 + b0 * y0[t] + c0 * y1[t] - mean[t, 0]) * scale[t, 0]
            out[t, 1] = (a1 + b1 * y0[t] + c1 * y1[t] - mean[t, 1]) * scale[t, 1]
            out[t, 2] = (a2 + b2 * y0[t] + c2 * y1[t] - mean[t, 2]) * scale[t, 2]
        return
    for j in range(out.shape[1]):
        a, b, c = coef[j, 0], coef[j, 1], coef[j, 2]
        for t in range(out.shape[0]):
            out[t, j] = (a + b * y0[t] + c * y1[t] - mean[t, j]) * scale[t, j]


@njit(nogil=True, cache=True)
def generate_serial(
    seed,
    stream,
    indices,
    bounds,
    mechanism,
    dt,
    sign_rule,
    feature_mean,
    feature_scale,
    out_features,
    out_labels,
    out_kinetic,
    out_amplitudes,
    out_spectra,
    out_conc,
):
    """Generate the samples `indices` on this thread; fills every out_* array (first axis = sample).

    out_conc may have zero rows: the concentrations are then kept only as the
    reduced state in a scratch buffer of LANES samples (training does not need them).
    The system is autonomous: only the grid's spacing dt matters, not its origin.
    """
    n, n_t, n_w = indices.shape[0], out_features.shape[1], out_spectra.shape[1]
    keep_conc = out_conc.shape[0] == n
    steps = np.empty(n, dtype=np.int64)
    for i in range(n):
        draw_sample(seed, stream, indices[i], bounds, out_kinetic[i], out_amplitudes[i], out_spectra[i])
        k1, k2, k3, e0, s0 = out_kinetic[i]
        steps[i] = rk4_substeps(k1 * (e0 + s0) + k2 + k3, e0 + s0, dt)
    order = np.argsort(steps, kind="mergesort")  # a group's lanes share one step count
    kin = np.empty((LANES, N_KINETIC))
    ys = np.empty((LANES, 2, n_t))
    sums = np.empty((5, LANES))
    work = np.empty((6, 3, max(N_SPECIES, n_w)))
    p = np.empty((3, N_SPECIES))
    lo = 0
    while lo < n:  # group by group, so the trajectories stay in cache
        n_sub = steps[order[lo]]
        hi = lo + 1
        while hi < min(n, lo + LANES) and steps[order[hi]] == n_sub:
            hi += 1
        for lane in range(LANES):  # a short group repeats its first sample: full groups vectorise
            kin[lane] = out_kinetic[order[lo + lane if lo + lane < hi else lo]]
        simulate_kinetics(mechanism, kin, n_sub, dt, ys, sums)
        for lane in range(hi - lo):
            i = order[lo + lane]
            e0, s0 = out_kinetic[i, 3], out_kinetic[i, 4]
            decompose(
                ys[lane],
                sums[:, lane],
                mechanism,
                e0,
                s0,
                out_amplitudes[i],
                out_spectra[i],
                sign_rule,
                feature_mean,
                feature_scale,
                out_features[i],
                out_labels[i],
                work,
            )
            if keep_conc:
                _affine_species(mechanism, e0, s0, p)
                _store_species(p, ys[lane], out_conc[i])
        lo = hi


@njit(parallel=True, cache=True)
def generate_parallel(
    seed,
    stream,
    indices,
    bounds,
    mechanism,
    dt,
    sign_rule,
    feature_mean,
    feature_scale,
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
            dt,
            sign_rule,
            feature_mean,
            feature_scale,
            out_features[lo:hi],
            out_labels[lo:hi],
            out_kinetic[lo:hi],
            out_amplitudes[lo:hi],
            out_spectra[lo:hi],
            out_conc[lo:hi] if out_conc.shape[0] == n else out_conc[0:0],
        )
