"""Start a child the way a terminal would, so a test can Ctrl-C it.

A process started as a background job of a non-interactive shell inherits SIGINT *ignored*, and
Python then installs no KeyboardInterrupt handler at all: a SIGINT sent by the test would do
nothing. (Seen: CI launched in the background made both interrupt tests hang.) Use
``preexec_fn=default_sigint`` for every child a test interrupts.
"""

from __future__ import annotations

import signal


def default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
