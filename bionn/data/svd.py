"""The decomposition of one sample's absorbance matrix into its SVD features and labels, without
forming the matrix (the algebra is in bionn.data.kinetics' docstring and docs/data-model.md).

D = C diag(a) S^T / ||D||_F with C = Y P affine in the reduced state Y = [1, y0, y1]; the singular
values of D are those of K = L^T Q (R = Y^T Y = L L^T), found from the 3 x 3 eigenproblem K K^T.
"""

from __future__ import annotations

import math

from numba import njit

from bionn.config.dataset import N_SPECIES


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
def _turn(c, s, x0, y0, x1, y1, x2, y2):
    """Columns p (x) and q (y) of the eigenvector matrix, rows 0-2, after the rotation (c, s)."""
    return (
        c * x0 - s * y0,
        s * x0 + c * y0,
        c * x1 - s * y1,
        s * x1 + c * y1,
        c * x2 - s * y2,
        s * x2 + c * y2,
    )


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
            v00, v01, v10, v11, v20, v21 = _turn(c, s, v00, v01, v10, v11, v20, v21)
        if a02 != 0.0:  # (0, 2, 1)
            a00, a22, a01, a12, c, s = _rotate(a00, a22, a02, a01, a12)
            a02 = 0.0
            v00, v02, v10, v12, v20, v22 = _turn(c, s, v00, v02, v10, v12, v20, v22)
        if a12 != 0.0:  # (1, 2, 0)
            a11, a22, a01, a02, c, s = _rotate(a11, a22, a12, a01, a02)
            a12 = 0.0
            v01, v02, v11, v12, v21, v22 = _turn(c, s, v01, v02, v11, v12, v21, v22)
    a[0, 0], a[1, 1], a[2, 2] = a00, a11, a22
    vecs[0, 0], vecs[0, 1], vecs[0, 2] = v00, v01, v02
    vecs[1, 0], vecs[1, 1], vecs[1, 2] = v10, v11, v12
    vecs[2, 0], vecs[2, 1], vecs[2, 2] = v20, v21, v22


@njit(cache=True)
def affine_species(mechanism, e0, s0, p):
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
    n_w, k = spectra.shape[0], out_features.shape[1]
    p = work[0, :, :N_SPECIES]
    q = work[1, :, :n_w]
    kmat = work[2, :, :n_w]  # K
    gram = work[3, :, :3]  # K K^T, then its eigenvalues on the diagonal
    vecs = work[4, :, :3]  # W
    coef = work[5, :k, :3]  # features_j(t) = coef_j . (1, y0(t), y1(t))
    affine_species(mechanism, e0, s0, p)
    _mix_spectra(p, amplitudes, spectra, q)
    chol = _cholesky(y.shape[1], sums)
    _normalised_k(chol, q, kmat)
    for r in range(3):
        for c in range(r, 3):
            acc = 0.0
            for w in range(n_w):
                acc += kmat[r, w] * kmat[c, w]
            gram[r, c] = acc
            gram[c, r] = acc
    _eigh3(gram, vecs)
    taken = 0  # bit mask of the eigenpairs used
    for j in range(k):
        col = -1
        for c in range(3):  # next largest eigenvalue
            if not taken & (1 << c) and (col < 0 or gram[c, c] > gram[col, col]):
                col = c
        taken |= 1 << col
        _component(j, col, gram, vecs, q, kmat, chol, p, y, sign_rule, coef, out_labels)
    _features(coef, y[0], y[1], feature_mean, feature_scale, out_features)


@njit(cache=True)
def _mix_spectra(p, amplitudes, spectra, q):
    """q (3, n_w) = p diag(a) S^T: the absorbance of each term of C = [1, y0, y1] p."""
    for r in range(3):
        for w in range(spectra.shape[0]):
            acc = 0.0
            for i in range(N_SPECIES):
                acc += p[r, i] * amplitudes[i] * spectra[w, i]
            q[r, w] = acc


@njit(cache=True)
def _cholesky(n_t, sums):
    """(l00, l10, l20, l11, l21, l22) of L L^T = R = [[T, sum y0, sum y1], [., sum y0^2, sum y0 y1],
    [., ., sum y1^2]]; a pivot rounded below zero (rank-deficient R, e.g. T = 2) becomes 0."""
    l00 = math.sqrt(float(n_t))
    l10 = sums[0] / l00
    l20 = sums[1] / l00
    l11 = math.sqrt(max(sums[2] - l10 * l10, 0.0))
    l21 = (sums[3] - l20 * l10) / l11 if l11 > 0.0 else 0.0
    l22 = math.sqrt(max(sums[4] - l20 * l20 - l21 * l21, 0.0))
    return l00, l10, l20, l11, l21, l22


@njit(cache=True)
def _normalised_k(chol, q, kmat):
    """kmat = L^T q, then q and kmat divided by ||D||_F = ||L^T q||_F."""
    l00, l10, l20, l11, l21, l22 = chol
    n_w = q.shape[1]
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


@njit(cache=True)
def _component(j, col, gram, vecs, q, kmat, chol, p, y, sign_rule, coef, out_labels):
    """Component j from eigenpair `col`: coef[j] (features_j = Y coef_j), its sign by `sign_rule`, and
    label row j = p^T L W_j."""
    l00, l10, l20, l11, l21, l22 = chol
    sigma = math.sqrt(max(gram[col, col], 0.0))
    w0, w1, w2 = vecs[0, col], vecs[1, col], vecs[2, col]
    for r in range(3):
        acc = 0.0
        for w in range(q.shape[1]):
            acc += q[r, w] * (kmat[0, w] * w0 + kmat[1, w] * w1 + kmat[2, w] * w2)
        coef[j, r] = acc / sigma
    flip = False
    if sign_rule == 0:  # U[0, j] >= 0
        flip = coef[j, 0] + coef[j, 1] * y[0, 0] + coef[j, 2] * y[1, 0] < 0.0
    elif sign_rule == 1:  # the largest-magnitude entry of U[:, j] >= 0
        best = 0.0
        for t in range(y.shape[1]):
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
