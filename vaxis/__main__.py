"""``python -m vaxis``: see :mod:`vaxis.runner`."""

import sys

from .runner import main

sys.exit(main())
