"""Run a command with SIGINT acting as a terminal's Ctrl-C, even when this process was started
with SIGINT ignored (a background job of a shell script, some CI runners): reset, then exec.

    sigint_default.py COMMAND [ARG ...]

(A preexec_fn would do the same after fork, in a child of a process whose JAX threads may hold
locks; exec'ing a fresh interpreter first keeps the test process out of it.)
"""

import os
import signal
import sys

signal.signal(signal.SIGINT, signal.SIG_DFL)
os.execv(sys.argv[1], sys.argv[1:])  # noqa: S606 - the test's own command
