"""A thread that outlives main() holds Python's exit open: the CLI's exit timer ends it."""

import threading
import time

from flaxdigits.cli.commands_serve import exit_within

threading.Thread(target=time.sleep, args=(120,)).start()
exit_within(1.0)
