"""openmm-arbg: Autoregressive Boltzmann Generators for OpenMM.

Train an ArBG on your own MD and use it as an exact Metropolis-Hastings move in openmmtools
samplers or as an importance sampler.
"""

from .utils import quiet_pymbar as _quiet_pymbar

_quiet_pymbar()  # pymbar logs banners at import

from .arbg import ArBG  # noqa: E402
from .sampling.importance import importance_sample  # noqa: E402
from .sampling.mcmc import ArBGMove, ArBGProposal  # noqa: E402

__version__ = "0.3.1"
__all__ = ["ArBG", "ArBGMove", "ArBGProposal", "importance_sample", "__version__"]
