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
kernel, GIL-free too, runs it on contiguous chunks over all cores for bulk work. Step 1 lives in
bionn.data.draws, step 3 in bionn.data.svd; this module integrates and drives them.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from bionn.config.dataset import N_SPECIES, Mechanism, SignRule
from bionn.data.draws import N_KINETIC, draw_sample
from bionn.data.svd import affine_species, decompose

# The kernels' integer codes of the config's choices.
MECHANISMS = {Mechanism.textbook: 0, Mechanism.legacy: 1}
SIGN_RULES = {SignRule.first_positive: 0, SignRule.max_abs_positive: 1, SignRule.solver: 2}
# RK4's global error on this system, measured against DOP853 (rtol 1e-12) over the test
# datasets, is at most about RK4_ERROR_COEF * (rate * h)^4 * (E0 + S0).
RK4_ERROR_COEF = 3e-4
# Global error each sample's step is chosen for (the tests allow 1e-8).
RK4_TOLERANCE = 2e-9
# Samples integrated side by side (SIMD lanes x latency hiding); groups are padded to it.
LANES = 16


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


@njit(nogil=True, cache=True)
def generate_serial(spec, indices, outs):
    """Generate the samples `indices` on this thread. spec = (seed, stream, bounds, mechanism, dt,
    sign_rule, feature_mean, feature_scale): what a sample is; outs = (features, labels, kinetic,
    amplitudes, spectra, concentrations): the arrays it fills (first axis = sample).

    The concentrations may have zero rows: they are then kept only as the
    reduced state in a scratch buffer of LANES samples (training does not need them).
    The system is autonomous: only the grid's spacing dt matters, not its origin.
    """
    seed, stream, bounds, mechanism, dt, sign_rule, feature_mean, feature_scale = spec
    out_features, out_labels, out_kinetic, out_amplitudes, out_spectra, out_conc = outs
    n, n_t, n_w = indices.shape[0], out_features.shape[1], out_spectra.shape[1]
    steps = _draw_all(seed, stream, indices, bounds, dt, out_kinetic, out_amplitudes, out_spectra)
    order = np.argsort(steps, kind="mergesort")  # a group's lanes share one step count
    kin = np.empty((LANES, N_KINETIC))
    ys = np.empty((LANES, 2, n_t))
    sums = np.empty((5, LANES))
    work = np.empty((6, 3, max(N_SPECIES, n_w)))
    p = np.empty((3, N_SPECIES))
    lo = 0
    while lo < n:  # group by group, so the trajectories stay in cache
        hi = _next_group(steps, order, lo, out_kinetic, kin)
        simulate_kinetics(mechanism, kin, steps[order[lo]], dt, ys, sums)
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
            if out_conc.shape[0] == n:
                affine_species(mechanism, e0, s0, p)
                _store_species(p, ys[lane], out_conc[i])
        lo = hi


@njit(cache=True)
def _next_group(steps, order, lo, kinetic, kin):
    """End of the group of samples order[lo:] that share lo's step count (at most LANES); fills kin
    (LANES, 5) with their kinetic rows, a short group repeating its first sample: full groups vectorise."""
    n_sub = steps[order[lo]]
    hi = lo + 1
    while hi < min(steps.shape[0], lo + LANES) and steps[order[hi]] == n_sub:
        hi += 1
    for lane in range(LANES):
        kin[lane] = kinetic[order[lo + lane if lo + lane < hi else lo]]
    return hi


@njit(cache=True)
def _draw_all(seed, stream, indices, bounds, dt, out_kinetic, out_amplitudes, out_spectra):
    """Draw every sample of `indices` into the out_* arrays; returns each sample's RK4 steps per interval."""
    steps = np.empty(indices.shape[0], dtype=np.int64)
    for i in range(indices.shape[0]):
        draw_sample(seed, stream, indices[i], bounds, out_kinetic[i], out_amplitudes[i], out_spectra[i])
        k1, k2, k3, e0, s0 = out_kinetic[i]
        steps[i] = rk4_substeps(k1 * (e0 + s0) + k2 + k3, e0 + s0, dt)
    return steps


@njit(parallel=True, nogil=True, cache=True)
def generate_parallel(spec, indices, outs, n_chunks):
    """generate_serial on all cores: `n_chunks` contiguous chunks of samples, one task each. A producer
    thread generates the next chunk while the main thread's Python feeds the device: Numba's parallel
    region releases the GIL by itself, nogil=True releases it for the whole call."""
    n = indices.shape[0]
    for c in prange(n_chunks):
        lo = c * n // n_chunks
        hi = (c + 1) * n // n_chunks
        generate_serial(spec, indices[lo:hi], _rows(outs, lo, hi, n))


@njit(cache=True)
def _rows(outs, lo, hi, n):
    """Rows lo:hi of every array of outs (of n samples); concentrations without rows stay empty."""
    features, labels, kinetic, amplitudes, spectra, conc = outs
    conc_rows = conc[lo:hi] if conc.shape[0] == n else conc[0:0]
    return features[lo:hi], labels[lo:hi], kinetic[lo:hi], amplitudes[lo:hi], spectra[lo:hi], conc_rows
