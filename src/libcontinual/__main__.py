"""``python -m libcontinual`` (and ``torchrun ... -m libcontinual run CONFIG``): the command line."""

import sys

from libcontinual.cli import main

sys.exit(main())
