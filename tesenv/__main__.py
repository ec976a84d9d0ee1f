"""``python -m tesenv``: the tesenv command."""

import sys

from tesenv.cli import main

sys.exit(main())
