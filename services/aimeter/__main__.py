"""``python -m aimeter`` is the same as the ``aimeter`` console script."""

import sys

from aimeter.cli import main

sys.exit(main())
