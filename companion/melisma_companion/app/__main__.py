"""``python -m melisma_companion.app``: the same as ``melisma-app``."""

import sys

from .main import main

sys.exit(main())
