"""`python -m wisp` runs the `wisp` command."""

import sys

from wisp.cli import main

sys.exit(main())
