"""The compiled engine against the plain per-sample reference and the physics."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_dataset

from bionn.data.reference import reference_sample

# Wide ranges too: fast rates force RK4 sub-steps, n_wavelengths != 4 changes D's shape.
DATASETS = {
    "seed ranges": {},
    "fast kinetics": {
        "parameters.k1_max": 2.0,
        "parameters.k2_max": 0.5,
        "parameters.k3_max": 0.8,
        "parameters.S0_max": 1.5,
    },
    "8 wavelengths, 2 components": {"simulation.n_wavelengths": 8, "simulation.n_components": 2},
    "short grid": {"simulation.t_stop": 50.0, "simulation.n_times": 101},
    "legacy mechanism": {"simulation.mechanism": "legacy"},
    "legacy, fast": {"simulation.mechanism": "legacy", "parameters.k1_max": 1.0, "parameters.E0_max": 2.0},
}


@pytest.mark.parametrize("name", DATASETS)
def test_engine_matches_tight_reference(name):
    ds = make_dataset(**{"shape.n_samples": 100000, **DATASETS[name]})
    indices = np.random.default_rng(1).choice(100000, 12, replace=False)
    got = ds.generate(indices)
    for n, index in enumerate(indices):
        ref = reference_sample(ds, int(index))
        np.testing.assert_array_equal(got.kinetic[n], ref["kinetic"])
        assert np.abs(got.concentrations[n] - ref["concentrations"]).max() <= 1e-8
        # Same sign rule on both sides, so features and labels match, not just up to sign.
        assert np.abs(got.features[n] - ref["features"]).max() <= 1e-7
        assert np.abs(got.labels[n] - ref["labels"]).max() <= 1e-6 * max(1.0, np.abs(ref["labels"]).max())


@pytest.mark.parametrize("mechanism", ["textbook", "legacy"])
def test_conservation_laws(mechanism):
    ds = make_dataset(**{"simulation.mechanism": mechanism})
    s = ds.generate(np.arange(64))
    e, sub, es, p = np.moveaxis(s.concentrations, 2, 0)
    e0, s0 = s.kinetic[:, 3:4], s.kinetic[:, 4:5]
    if mechanism == "textbook":
        pairs = [(e + es, e0), (sub + es + p, s0)]
    else:  # the older code's E + S <-> ES -> S + P conserves these instead
        pairs = [(sub + es, s0), (e + es + p, e0)]
    for total, initial in pairs:
        np.testing.assert_allclose(total, np.broadcast_to(initial, total.shape), atol=1e-14)
    assert (s.concentrations > -1e-12).all()


def test_textbook_and_legacy_differ():
    textbook = make_dataset().generate(np.arange(16))
    legacy = make_dataset(**{"simulation.mechanism": "legacy"}).generate(np.arange(16))
    np.testing.assert_array_equal(textbook.kinetic, legacy.kinetic)
    assert np.abs(textbook.concentrations - legacy.concentrations).max() > 1e-2


def test_sample_structure():
    ds = make_dataset()
    s = ds.generate(np.arange(32))
    np.testing.assert_allclose(np.linalg.norm(s.spectra, axis=1), 1.0, atol=1e-12)
    assert (s.kinetic >= ds.bounds[:5, 0]).all() and (s.kinetic < ds.bounds[:5, 1]).all()
    # features = U sigma: its columns are orthogonal and their norms are the singular values
    gram = np.einsum("ntj,ntk->njk", s.features, s.features)
    off = gram - np.einsum("njk,jk->njk", gram, np.eye(3))
    assert np.abs(off).max() < 1e-10
    sigma = np.sqrt(np.einsum("njj->nj", gram))
    assert (np.diff(sigma, axis=1) <= 0).all() and (sigma[:, 0] <= 1.0 + 1e-12).all()
    # first_positive sign rule
    assert (s.features[:, 0, :] >= 0).all()


@pytest.mark.parametrize("rule", ["first_positive", "max_abs_positive", "solver"])
def test_sign_rules_flip_features_and_labels_together(rule):
    base = make_dataset(**{"simulation.svd_sign": "first_positive"}).generate(np.arange(32))
    other = make_dataset(**{"simulation.svd_sign": rule}).generate(np.arange(32))
    signs = np.sign(np.einsum("ntk,ntk->nk", base.features, other.features))
    assert (np.abs(signs) == 1).all()
    np.testing.assert_allclose(other.features, base.features * signs[:, None, :], atol=1e-12)
    labels = other.labels.reshape(-1, 3, 4)
    np.testing.assert_allclose(labels, base.labels.reshape(-1, 3, 4) * signs[:, :, None], atol=1e-9)
    if rule == "max_abs_positive":
        peak = np.take_along_axis(other.features, np.abs(other.features).argmax(1)[:, None, :], 1)
        assert (peak >= 0).all()
