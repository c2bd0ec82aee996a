"""Warnings a sampling result calls for: one place for the thresholds every command and report uses.

* ESS/N below 1 %: the importance weights rest on a few samples.
* Pareto k of the weights above 0.7: heavy-tailed weights, error bars too small.
* Metropolis-Hastings acceptance below 1 %: the chain hardly moves by model proposals.
* More than 1 % of proposals with a wrong-handed stereocentre: the model puts mass outside the
  target (those proposals get weight 0 or are rejected; the cost is wasted energy evaluations).
"""

import math

import numpy as np

__all__ = ["warning_lines", "diagnostics_of", "THRESHOLDS"]

THRESHOLDS = dict(ess_fraction=0.01, pareto_k=0.7, acceptance_rate=0.01, wrong_handed_fraction=0.01)


def diagnostics_of(result):
    """The numbers :func:`warning_lines` checks, from an
    :class:`~openmm_arbg.sampling.importance.ImportanceSamplingResult`, a
    :class:`~openmm_arbg.sampling.chain.ChainResult` or a mapping with some of the keys
    ``ess_fraction``, ``pareto_k``, ``acceptance_rate``, ``wrong_handed_fraction``."""
    if isinstance(result, dict):
        return {k: result[k] for k in THRESHOLDS if result.get(k) is not None}
    out = {}
    if hasattr(result, "log_weights"):  # importance sampling
        out["ess_fraction"] = result.ess_fraction
        out["pareto_k"] = result.pareto_k
        out["wrong_handed_fraction"] = float(1 - np.mean(result.valid)) if len(result.valid) else math.nan
    if hasattr(result, "acceptance_rate"):  # a chain of ArBG moves
        out["acceptance_rate"] = result.acceptance_rate
        out["wrong_handed_fraction"] = result.wrong_handed_fraction
    return out


_MESSAGES = {  # warn below the threshold for ESS/N and acceptance, above it for the others
    "ess_fraction": "ESS/N is {pct:.2f} % (< {tpct:g} %): the weighted estimates rest on a few samples; train the model longer or on more data, or draw more proposals",
    "pareto_k": "Pareto k of the importance weights is {v:.2f} (> {t}): the weights are heavy-tailed and the error bars are too small; use more proposals or a better model",
    "acceptance_rate": "ArBGMove acceptance is {pct:.2f} % (< {tpct:g} %): model proposals hardly ever move the chain; the model does not cover this target well (try a proposal temperature above 1 or a better model)",
    "wrong_handed_fraction": "{pct:.1f} % of proposals have a wrong-handed stereocentre (> {tpct:g} %): they are wasted (weight 0, rejected); the model was trained on too little data around them",
}
_BELOW = ("ess_fraction", "acceptance_rate")


def warning_lines(result):
    """Warning lines (str, without a prefix) for the diagnostics of ``result`` that cross their
    thresholds (:data:`THRESHOLDS`); empty if none does. ``result`` is anything
    :func:`diagnostics_of` reads."""
    d = diagnostics_of(result)
    lines = []
    for key, message in _MESSAGES.items():
        v, t = d.get(key), THRESHOLDS[key]
        if v is not None and math.isfinite(v) and (v < t if key in _BELOW else v > t):
            lines.append(message.format(v=v, t=t, pct=100 * v, tpct=100 * t))
    return lines
