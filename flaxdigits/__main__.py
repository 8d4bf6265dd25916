"""`python -m flaxdigits`: same as the `flaxdigits` console script."""

import sys

from flaxdigits.cli import main

sys.exit(main())
