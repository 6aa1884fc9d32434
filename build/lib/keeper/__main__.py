"""`python -m keeper ...` is the `keeper` command."""

import sys

from keeper.cli.main import main

sys.exit(main())
