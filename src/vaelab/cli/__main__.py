"""`python -m vaelab.cli`: the `vaelab` command."""

import sys

from vaelab.cli import main

sys.exit(main())
