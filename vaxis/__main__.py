"""``python -m vaxis``: see :mod:`vaxis.run.runner`."""

import sys

from .run.runner import main

sys.exit(main())
