"""`python -m latentdd ...` (and `accelerate launch -m latentdd encode ...`) run the CLI."""

import sys

from latentdd.cli import main

sys.exit(main())
