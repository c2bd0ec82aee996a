"""Planted errors in the model's log density, to measure the power of the exactness tests.

A planted error adds ``DELTA`` = 0.3 nats to the log density of ONE model coordinate ``j`` on
half of its range (``z_j > threshold``):

* ``"sampling_and_log_prob"``: :meth:`AutoregressiveDensity.log_prob_terms` (hence ``log_prob``,
  ``log_prob(start=k)``, ``log_prob(stop=k)``) AND the ``log q`` that generation reports
  (:meth:`AutoregressiveDensity.step`, hence ``sample``) both carry the error, consistently,
  while the draws themselves are unchanged: the reported density is ``q(z) exp(0.3 [z_j > t])``
  (unnormalised) but the samples come from ``q``. No consistency check between ``sample`` and
  ``log_prob`` can see it; only a test of the sampler's target can.
* ``"log_prob_only"``: only ``log_prob_terms``; ``sample`` still reports the true ``log q``.

Targets (the coordinate is looked up per model, so one setting works for both representations):

* ``"torsion"``: internal coordinates: the last torsion (a periodic coordinate; the error sits
  where its wrapped value is > 0). Cartesian coordinates: the last coordinate (z of the last
  placed atom in the anchor frame, whose sign is the handedness of the chain's last torsion),
  threshold 0.
* ``"bond"``: internal coordinates: the bond length of the last placed atom (the third-last
  coordinate); Cartesian: ``x_b`` (the length of the anchor bond a-b, coordinate 0). Threshold:
  the median of the harmonic chain's exact bond-length law (:func:`chain_bond_median`).

Use :func:`planted_error` as a context manager, or set the environment variable
``ARBG_PLANT_ERROR=<mode>:<target>`` (e.g. ``sampling_and_log_prob:torsion``), which
``tests/conftest.py`` reads to plant the error for a whole pytest session.
"""

import contextlib
import functools
import os

import torch
from scipy import optimize

from openmm_arbg.model.density import AutoregressiveDensity

__all__ = ["DELTA", "MODES", "TARGETS", "ENV_VAR", "planted_error", "planted_column", "chain_bond_median", "from_environment"]

DELTA = 0.3
MODES = ("sampling_and_log_prob", "log_prob_only")
TARGETS = ("torsion", "bond")
ENV_VAR = "ARBG_PLANT_ERROR"


@functools.lru_cache(maxsize=None)
def chain_bond_median(temperature_K=300.0):
    """Median of one bond length of :func:`~openmm_arbg.simulation.testsystems.harmonic_chain`
    (default parameters) at ``temperature_K``, nm."""
    from openmm_arbg.simulation.testsystems import harmonic_chain

    _, analytic = harmonic_chain(4)
    return optimize.brentq(lambda r: analytic.probability("bond", 0.0, r, temperature_K) - 0.5, 0.05, 0.4, xtol=1e-12)


def planted_column(density, target):
    """``(j, threshold)``: the coordinate of ``density`` that carries the planted error."""
    kinds = density.discretizer.kinds
    D = len(kinds)
    internal = "periodic" in kinds
    if target == "torsion":
        j = max(i for i, k in enumerate(kinds) if k == "periodic") if internal else D - 1
        return j, 0.0
    if target == "bond":
        j = D - 3 if internal else 0
        if kinds[j] != "positive":  # pragma: no cover - guards the layout assumed above
            raise AssertionError(f"coordinate {j} is {kinds[j]}, not a bond length")
        return j, chain_bond_median()
    raise ValueError(f"unknown target {target!r}; use one of {TARGETS}")


@contextlib.contextmanager
def planted_error(mode, target, delta=DELTA):
    """Plant ``delta`` nats into one coordinate's log density of every AutoregressiveDensity
    while the block runs (see the module docstring)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; use one of {MODES}")
    planted_column(_Probe(), target)  # validates target
    original_terms = AutoregressiveDensity.log_prob_terms
    original_step = AutoregressiveDensity.step

    def log_prob_terms(self, z, proposal_temperature=1.0):
        terms = original_terms(self, z, proposal_temperature)
        j, threshold = planted_column(self, target)
        zj = self.discretizer.wrap(torch.as_tensor(z).to(device=terms.device, dtype=torch.float64))[:, j]
        bump = delta * (zj > threshold).to(terms.dtype)
        column = torch.zeros(terms.shape[1], dtype=terms.dtype, device=terms.device)
        column[j] = 1.0
        return terms + bump[:, None] * column[None, :]

    def step(self, state, generator=None):
        position = state.position
        zj, log_qj = original_step(self, state, generator)
        j, threshold = planted_column(self, target)
        if position == j:
            bump = delta * (zj > threshold).to(log_qj.dtype)
            log_qj = log_qj + bump
            state.log_q += bump
        return zj, log_qj

    AutoregressiveDensity.log_prob_terms = log_prob_terms
    if mode == "sampling_and_log_prob":
        AutoregressiveDensity.step = step
    try:
        yield
    finally:
        AutoregressiveDensity.log_prob_terms = original_terms
        AutoregressiveDensity.step = original_step


class _Probe:
    """A stand-in density with internal-coordinate kinds, to validate a target eagerly."""

    class discretizer:
        kinds = ["positive", "positive", "angle", "positive", "angle", "periodic"]


def from_environment():
    """``(mode, target)`` from ``ARBG_PLANT_ERROR``, or None when it is unset or empty."""
    value = os.environ.get(ENV_VAR, "").strip()
    if not value:
        return None
    mode, _, target = value.partition(":")
    if mode not in MODES or target not in TARGETS:
        raise ValueError(f"{ENV_VAR}={value!r}: expected <mode>:<target> with mode in {MODES} and target in {TARGETS}")
    return mode, target
