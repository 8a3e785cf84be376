"""`python -m nanomq`: the `nanomq` command line."""

import sys

from nanomq.cli import main

sys.exit(main())
