"""`python -m bench [--quick] [--publish] ...`: see bench/run.py."""

import sys

from bench.run import main

sys.exit(main())
