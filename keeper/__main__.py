"""`python -m keeper ...` is the `keeper` command."""

import sys

from keeper.cli import main

sys.exit(main())
