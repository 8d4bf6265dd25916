"""Three atomic writes into DIR: other.bin, then data.bin twice (the tests pause the second)."""

import sys

from flaxdigits.core.atomic import write_bytes_atomic

folder = sys.argv[1]
write_bytes_atomic(folder + "/other.bin", b"x" * 10)
write_bytes_atomic(folder + "/data.bin", b"n" * 10)
write_bytes_atomic(folder + "/data.bin", b"new" * 1000)
