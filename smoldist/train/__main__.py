"""`python -m smoldist.train RECIPE [overrides]` and `accelerate launch -m smoldist.train ...`: `smoldist train`."""

import sys

from smoldist.cli import main

sys.exit(main(["train", *sys.argv[1:]]))
