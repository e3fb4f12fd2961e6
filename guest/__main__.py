"""``python3 -m gagent.guest``: the same as ``gagent-guest``."""

import sys

from .cli import main

sys.exit(main())
