"""`python -m swiftserve`: the `swiftserve` command, for an environment whose scripts are not on PATH."""

import sys

from swiftserve.cli import main

sys.exit(main())
