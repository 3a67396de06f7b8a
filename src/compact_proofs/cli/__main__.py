"""`python -m compact_proofs.cli`: the same as the `compact-proofs` command."""

import sys

from compact_proofs.cli import main

sys.exit(main())
