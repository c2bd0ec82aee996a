"""The discretised autoregressive density is normalised, fully supported and exactly tempered."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from openmm_arbg.model.density import AutoregressiveDensity
from openmm_arbg.model.discretizer import Discretizer
from openmm_arbg.model.network import CausalTransformer, NetworkConfig

KINDS = ["unbounded", "positive", "angle", "periodic"]


def _toy_density(kinds, seed=0, n_bins=8, data=None):
    """An untrained density with sharp random conditionals (large output weights)."""
    rng = np.random.default_rng(seed)
    if data is None:
        cols = []
        for k in kinds:
            if k == "unbounded":
                cols.append(rng.normal(0.0, 1.0, 200))
            elif k == "positive":
                cols.append(rng.uniform(0.05, 0.3, 200))  # tail below the range truncated at 0
            elif k == "angle":
                cols.append(rng.uniform(0.5, 2.9, 200))  # both tails truncated (0 and pi)
            else:
                cols.append(rng.uniform(-math.pi, math.pi, 200))
        data = np.stack(cols, 1)
    disc = Discretizer.fit(data, kinds, n_bins=n_bins, margin=0.2)
    torch.manual_seed(seed)
    cfg = NetworkConfig(n_layer=1, n_head=2, d_model=16, vocab_size=disc.vocab_size, max_positions=disc.n_coords)
    dens = AutoregressiveDensity(CausalTransformer(cfg), disc, torch.zeros((disc.n_coords, 0), dtype=torch.long))
    with torch.no_grad():
        dens.network.head.weight.mul_(80.0)
        dens.network.value_embedding.weight.mul_(50.0)
    return dens


def _grid(disc, j, per_bin=16, tail_scales=40, n_tail=4000):
    """Quadrature nodes and weights for coordinate j: midpoints inside bins (exact for the
    piecewise-constant within-bin density) and a fine midpoint grid over each tail."""
    lo, hi, w, s = (float(t[j]) for t in (disc.lo, disc.hi, disc.width, disc.tail_scale))
    h = w / per_bin
    nodes = [lo + h * (np.arange(per_bin * disc.n_bins) + 0.5)]
    weights = [np.full(per_bin * disc.n_bins, h)]
    lb, ub = float(disc.lower_bound[j]), float(disc.upper_bound[j])
    if bool(disc.token_mask[j, 0]):
        a = max(lb, lo - tail_scales * s)
        edges = np.linspace(a, lo, n_tail + 1)
        nodes.append(0.5 * (edges[1:] + edges[:-1]))
        weights.append(np.diff(edges))
    if bool(disc.token_mask[j, -1]):
        b = min(ub, hi + tail_scales * s)
        edges = np.linspace(hi, b, n_tail + 1)
        nodes.append(0.5 * (edges[1:] + edges[:-1]))
        weights.append(np.diff(edges))
    return np.concatenate(nodes), np.concatenate(weights)


@pytest.mark.parametrize("kind", KINDS)
def test_1d_density_integrates_to_one(kind):
    dens = _toy_density([kind])
    nodes, weights = _grid(dens.discretizer, 0)
    logq = dens.log_prob(torch.as_tensor(nodes[:, None])).detach().numpy()
    total = np.sum(np.exp(logq) * weights)
    assert abs(total - 1.0) < 1e-6, total
    # the tails carry probability (full support) where the coordinate has room for them
    if kind in ("unbounded", "angle"):
        outside = (nodes < float(dens.discretizer.lo[0])) | (nodes >= float(dens.discretizer.hi[0]))
        assert outside.any() and np.isfinite(logq[outside]).all()


@pytest.mark.parametrize("kinds", [["periodic", "positive"], ["unbounded", "angle"]])
def test_2d_density_integrates_to_one(kinds):
    dens = _toy_density(kinds, seed=1, n_bins=6)
    n1, w1 = _grid(dens.discretizer, 0, per_bin=12, n_tail=300, tail_scales=30)
    n2, w2 = _grid(dens.discretizer, 1, per_bin=4, n_tail=300, tail_scales=30)
    Z = np.stack(np.meshgrid(n1, n2, indexing="ij"), -1).reshape(-1, 2)
    W = np.outer(w1, w2).reshape(-1)
    logq = dens.log_prob(torch.as_tensor(Z)).detach().numpy()
    total = np.sum(np.exp(logq) * W)
    # the conditional of z2 varies continuously with z1 inside a bin: quadrature error only
    assert abs(total - 1.0) < 2e-3, total


def test_support_bounds_and_wrapping():
    dens = _toy_density(["positive", "angle", "periodic"], seed=2)
    lp = dens.log_prob(torch.tensor([[-0.1, 1.0, 0.0], [0.1, math.pi + 0.01, 0.0], [0.1, 1.0, 0.3]], dtype=torch.float64))
    assert lp[0] == -math.inf and lp[1] == -math.inf and math.isfinite(lp[2])
    # periodic coordinates wrap: z and z + 2 pi have the same density
    a = dens.log_prob(torch.tensor([[0.1, 1.0, 0.3]], dtype=torch.float64))
    b = dens.log_prob(torch.tensor([[0.1, 1.0, 0.3 + 2 * math.pi]], dtype=torch.float64))
    assert torch.allclose(a, b)
    # far outside the fitted range of an unbounded coordinate: still finite (exponential tail)
    d = _toy_density(["unbounded"], seed=3)
    assert math.isfinite(d.log_prob(torch.tensor([[25.0]], dtype=torch.float64)).item())


@pytest.mark.parametrize("temperature", [0.6, 1.0, 1.7])
def test_sampling_matches_log_q_and_tempered_frequencies(temperature):
    dens = _toy_density(["unbounded"], seed=4, n_bins=8)
    gen = torch.Generator().manual_seed(5)
    n = 40000
    z, log_q = dens.sample(n, proposal_temperature=temperature, generator=gen)
    assert (dens.log_prob(z, temperature) - log_q).abs().max() < 1e-6
    # token frequencies against the tempered categorical of the model
    disc = dens.discretizer
    tokens, _ = disc.tokenize(z)
    counts = np.bincount(tokens[:, 0].numpy(), minlength=disc.vocab_size)
    with torch.no_grad():
        logits = dens.start(1).logits[0].double()
    p = torch.softmax(logits / temperature, -1).numpy()
    keep = p * n > 5
    expected = p[keep] * n
    chi2 = np.sum((counts[keep] - expected) ** 2 / expected)
    pvalue = stats.chi2.sf(chi2, keep.sum() - 1)
    assert pvalue > 1e-3, (counts, p * n)
    assert counts[~keep].sum() <= max(20, 5 * (~keep).sum())
    # and the continuous values: a histogram with finer cells than the bins follows exp(log q)
    edges = np.linspace(float(disc.lo[0]), float(disc.hi[0]), 4 * disc.n_bins + 1)
    hist, _ = np.histogram(z[:, 0].numpy(), edges)
    mids = torch.as_tensor(0.5 * (edges[1:] + edges[:-1])[:, None])
    exp_counts = n * np.exp(dens.log_prob(mids, temperature).detach().numpy()) * np.diff(edges)
    ok = exp_counts > 5
    chi2 = np.sum((hist[ok] - exp_counts[ok]) ** 2 / exp_counts[ok])
    assert stats.chi2.sf(chi2, ok.sum()) > 1e-3


def test_bad_temperature():
    dens = _toy_density(["unbounded"])
    with pytest.raises(ValueError, match="temperature"):
        dens.sample(3, proposal_temperature=0.0)
    with pytest.raises(ValueError, match="temperature"):
        dens.log_prob(torch.zeros(1, 1, dtype=torch.float64), proposal_temperature=float("nan"))


def test_discretizer_fit_errors():
    with pytest.raises(ValueError, match="NaN"):
        Discretizer.fit(np.array([[0.0], [np.nan]]), ["unbounded"])
    with pytest.raises(ValueError, match="unknown coordinate kinds"):
        Discretizer.fit(np.zeros((3, 1)), ["bogus"])
    with pytest.raises(ValueError, match="shape"):
        Discretizer.fit(np.zeros((3, 2)), ["unbounded"])
