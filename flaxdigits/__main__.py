"""`python -m flaxdigits`: same as the `flaxdigits` console script."""

import sys

from flaxdigits.cli.main import main

sys.exit(main())
