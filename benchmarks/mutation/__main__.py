"""python -m benchmarks.mutation: see benchmarks/mutation/__init__.py."""

import sys

from benchmarks.mutation.main import main

sys.exit(main())
