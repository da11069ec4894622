import sys

from smoldist.cli import main

sys.exit(main())
