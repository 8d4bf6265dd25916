"""A thread that outlives main() holds Python's exit open: the CLI's exit timer ends it."""

import threading
import time

from flaxdigits.cli import main as cli

threading.Thread(target=time.sleep, args=(120,)).start()
cli._exit_within(1.0)
