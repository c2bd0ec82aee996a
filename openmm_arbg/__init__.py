"""openmm-arbg: Autoregressive Boltzmann Generators for OpenMM.

Train an ArBG on your own MD and use it as an exact Metropolis-Hastings move in openmmtools
samplers or as an importance sampler.
"""

import logging as _logging

_logging.getLogger("pymbar").setLevel(_logging.ERROR)  # pymbar logs banners at import

from .arbg import ArBG
from .mcmc import ArBGMove, ArBGProposal

__version__ = "0.1.0"
__all__ = ["ArBG", "ArBGMove", "ArBGProposal", "__version__"]
