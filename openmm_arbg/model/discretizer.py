"""Per-coordinate bins with an exact, fully supported continuous density.

Each model coordinate ``z_j`` is mapped to one of ``L + 2`` tokens:

* token ``0``: the lower tail ``z < lo_j``,
* tokens ``1 .. L``: bin ``k`` = ``[lo_j + (k-1) w_j, lo_j + k w_j)`` with ``w_j = (hi_j - lo_j) / L``
  (floor binning),
* token ``L + 1``: the upper tail ``z >= hi_j``.

Given its token, ``z_j`` is uniform inside a bin (density ``1 / w_j``) or exponential in a tail
(scale ``s_j``, truncated at the coordinate's bound where it has one), so the continuous density
is ``P(token) * p(z | token)``, normalised and positive on the whole support. Periodic coordinates
(torsions) use ``[-pi, pi)`` exactly, are wrapped before binning and have no tails. Half torsions
(``sign * torsion`` relative to a sibling substituent of a stereocentre, support ``(0, pi)``) are
bounded like angles: tails truncated at both bounds, never wrapped. A tail that would lie
outside the coordinate's bound (``lo_j`` equal to the bound) is masked out.

All arithmetic is float64; log densities are in nats per unit of the coordinate (nm or rad).
"""

import math

import numpy as np
import torch

from ..molecule.representation import ANGLE, HALF_TORSION, PERIODIC, POSITIVE, UNBOUNDED

__all__ = ["Discretizer"]

_BOUNDS = {
    UNBOUNDED: (-math.inf, math.inf),
    POSITIVE: (0.0, math.inf),
    ANGLE: (0.0, math.pi),
    PERIODIC: (-math.pi, math.pi),
    HALF_TORSION: (0.0, math.pi),
}


class Discretizer:
    """Bins and tails for ``D`` coordinates.

    Parameters
    ----------
    kinds : list of str
        One of ``"unbounded"``, ``"positive"``, ``"angle"``, ``"periodic"``, ``"half_torsion"`` per
        coordinate.
    lo, hi : array_like, shape (D,)
        Binned range of each coordinate (units of the coordinate).
    n_bins : int
        ``L``, bins per coordinate.
    tail_scale : array_like, shape (D,)
        Scale of the exponential tails (units of the coordinate).
    """

    def __init__(self, kinds, lo, hi, n_bins, tail_scale):
        self.kinds = list(kinds)
        unknown = set(self.kinds) - set(_BOUNDS)
        if unknown:
            raise ValueError(f"unknown coordinate kinds {sorted(unknown)}; use {sorted(_BOUNDS)}")
        self.n_bins = int(n_bins)
        if self.n_bins < 2:
            raise ValueError(f"n_bins must be at least 2; got {n_bins}")
        self.lo = torch.as_tensor(np.asarray(lo, dtype=float), dtype=torch.float64)
        self.hi = torch.as_tensor(np.asarray(hi, dtype=float), dtype=torch.float64)
        self.tail_scale = torch.as_tensor(np.asarray(tail_scale, dtype=float), dtype=torch.float64)
        D = len(self.kinds)
        if not (self.lo.shape == self.hi.shape == self.tail_scale.shape == (D,)):
            raise ValueError("lo, hi and tail_scale must each have one value per coordinate")
        bounds = torch.tensor([_BOUNDS[k] for k in self.kinds], dtype=torch.float64)
        self.lower_bound, self.upper_bound = bounds[:, 0], bounds[:, 1]
        self.periodic = torch.tensor([k == PERIODIC for k in self.kinds])
        if not bool((self.hi > self.lo).all()):
            raise ValueError("every coordinate needs hi > lo")
        if bool((self.lo < self.lower_bound).any() | (self.hi > self.upper_bound).any()):
            raise ValueError("a binned range extends beyond its coordinate's bound")
        if not bool((self.tail_scale > 0).all()):
            raise ValueError("tail_scale must be positive")
        self.width = (self.hi - self.lo) / self.n_bins
        # tail truncation: exponential of scale s on (bound, lo), normalised by 1 - exp(-(lo-bound)/s)
        self._low_T = (self.lo - self.lower_bound) / self.tail_scale
        self._high_T = (self.upper_bound - self.hi) / self.tail_scale
        self.token_mask = torch.ones(D, self.vocab_size, dtype=torch.bool)
        self.token_mask[:, 0] = (self._low_T > 0) & ~self.periodic
        self.token_mask[:, -1] = (self._high_T > 0) & ~self.periodic

    @property
    def n_coords(self):
        return len(self.kinds)

    @property
    def vocab_size(self):
        return self.n_bins + 2

    # ------------------------------------------------------------------ fitting and storage
    @classmethod
    def fit(cls, z, kinds, n_bins=256, margin=0.1):
        """Fit ranges to data: ``[min - m, max + m]`` with ``m = margin * (max - min)``, clipped to
        each coordinate's bounds; periodic coordinates get ``[-pi, pi)``; tail scale ``m``.

        Parameters
        ----------
        z : array_like, shape (n_samples, D)
        kinds : list of str
        n_bins : int
        margin : float
            Fraction of the data range added on each side.
        """
        unknown = set(kinds) - set(_BOUNDS)
        if unknown:
            raise ValueError(f"unknown coordinate kinds {sorted(unknown)}; use {sorted(_BOUNDS)}")
        z = np.asarray(z, dtype=float)
        if z.ndim != 2 or z.shape[1] != len(kinds):
            raise ValueError(f"z must have shape (n_samples, {len(kinds)}); got {z.shape}")
        if len(z) < 2:
            raise ValueError("fitting bin ranges needs at least 2 samples")
        if not np.isfinite(z).all():
            raise ValueError("cannot fit bin ranges: the data contain NaN or inf")
        half = [j for j, kind in enumerate(kinds) if kind == HALF_TORSION]
        if half:
            outside = ((z[:, half] <= 0) | (z[:, half] >= math.pi)).any(axis=1)
            if outside.any():
                raise ValueError(
                    f"{int(outside.sum())} of {len(z)} frames (first: frame {int(np.argmax(outside))}) have a "
                    "stereocentre of the opposite handedness to the reference structure (a half torsion outside "
                    "(0, pi)); the model's support excludes them. Remove those frames or choose another reference."
                )
        zmin, zmax = z.min(0), z.max(0)
        span = np.maximum(zmax - zmin, 1e-6 * np.maximum(np.abs(zmax), 1e-3))
        m = margin * span
        lo, hi, scale = zmin - m, zmax + m, np.maximum(m, 1e-9)
        for j, kind in enumerate(kinds):
            lb, ub = _BOUNDS[kind]
            if kind == PERIODIC:
                lo[j], hi[j], scale[j] = -math.pi, math.pi, 1.0
            else:
                lo[j], hi[j] = max(lo[j], lb), min(hi[j], ub)
        return cls(kinds, lo, hi, n_bins, scale)

    def state_dict(self):
        return {
            "kinds": self.kinds,
            "n_bins": self.n_bins,
            "lo": self.lo.tolist(),
            "hi": self.hi.tolist(),
            "tail_scale": self.tail_scale.tolist(),
        }

    @classmethod
    def from_state_dict(cls, d):
        return cls(d["kinds"], d["lo"], d["hi"], d["n_bins"], d["tail_scale"])

    def _on(self, z):
        dev = z.device
        return (t.to(dev) for t in (self.lo, self.hi, self.width, self.tail_scale, self._low_T, self._high_T))

    # ------------------------------------------------------------------ the map
    def wrap(self, z, cols=slice(None)):
        """Wrap the periodic ones among columns ``cols`` of ``z`` into [-pi, pi)."""
        p = self.periodic[cols].to(z.device)
        if not bool(p.any()):
            return z
        return torch.where(p, torch.remainder(z + math.pi, 2 * math.pi) - math.pi, z)

    def tokenize(self, z, cols=slice(None)):
        """Tokens and ``log p(z | token)`` of coordinates ``z`` (n, D) float64.

        Returns
        -------
        tokens : torch.LongTensor, shape (n, D)
        log_density : torch.Tensor, shape (n, D)
            Log density of ``z`` inside its token (``-log w`` in a bin, the tail's log density in
            a tail); ``-inf`` outside the coordinate's support.
        """
        lo, hi, w, s, lowT, highT = (t[cols] for t in self._on(z))
        z = self.wrap(z, cols)
        k = torch.floor((z - lo) / w).clamp(0, self.n_bins - 1).long() + 1
        below, above = z < lo, z >= hi
        tokens = torch.where(below, torch.zeros_like(k), torch.where(above, torch.full_like(k, self.n_bins + 1), k))
        log_bin = -torch.log(w).expand_as(z)
        log_low = -(lo - z) / s - torch.log(s) - torch.log(-torch.expm1(-lowT))
        log_high = -(z - hi) / s - torch.log(s) - torch.log(-torch.expm1(-highT))
        logp = torch.where(below, log_low, torch.where(above, log_high, log_bin))
        lb, ub = self.lower_bound[cols].to(z.device), self.upper_bound[cols].to(z.device)
        outside = (z <= lb) | (z >= ub)
        outside = outside & ~self.periodic[cols].to(z.device)
        logp = torch.where(outside | ~torch.isfinite(z), torch.full_like(logp, -math.inf), logp)
        return tokens, logp

    def dequantize(self, tokens, u, col):
        """Draw ``z`` given the tokens of column ``col``, from uniforms ``u`` in (0, 1).

        Returns ``z`` and ``log p(z | token)``, both shape (n,).
        """
        lo, hi, w, s, lowT, highT = (t[col] for t in self._on(u))
        k = (tokens - 1).to(torch.float64)
        z_bin = lo + (k + u) * w
        # truncated exponential: E = -log(1 - u (1 - exp(-T))), T = inf gives the plain exponential
        e_low = -torch.log1p(u * torch.expm1(-lowT))
        e_high = -torch.log1p(u * torch.expm1(-highT))
        z_low, z_high = lo - s * e_low, hi + s * e_high
        z = torch.where(tokens == 0, z_low, torch.where(tokens == self.n_bins + 1, z_high, z_bin))
        if bool(self.periodic[col]):
            z = torch.remainder(z + math.pi, 2 * math.pi) - math.pi
        _, logp = self.tokenize(z[:, None], cols=slice(col, col + 1))
        return z, logp[:, 0]

    def features(self, z, cols=slice(None)):
        """Continuous input features of coordinates (n, D) -> (n, D, 3) float32 for the network:
        the position in the binned range scaled to [-1, 1] (clamped to [-2, 2]), and for periodic
        coordinates cos and sin."""
        lo, hi = self.lo[cols].to(z.device), self.hi[cols].to(z.device)
        u = (2 * (z - lo) / (hi - lo) - 1).clamp(-2, 2)
        p = self.periodic[cols].to(z.device)
        u = torch.where(p, torch.zeros_like(u), u)
        c = torch.where(p, torch.cos(z), torch.zeros_like(z))
        s = torch.where(p, torch.sin(z), torch.zeros_like(z))
        return torch.stack([u, c, s], dim=-1).float()
