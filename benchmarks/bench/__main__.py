"""python -m benchmarks.bench: see benchmarks/bench/__init__.py."""

import sys

from benchmarks.bench.main import main

sys.exit(main())
