"""``python -m openmm_arbg.cli``: the same as the ``arbg`` command."""

import sys

from . import main

sys.exit(main())
