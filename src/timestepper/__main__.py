"""``python -m timestepper ...`` (and ``torchrun -m timestepper ...``): the ``timestepper`` command."""

import sys

from .cli import main

sys.exit(main())
