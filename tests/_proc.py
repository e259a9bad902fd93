"""Test helpers for real child processes."""

from __future__ import annotations

import signal


def restore_sigint() -> None:
    """``preexec_fn`` for a child that a test sends Ctrl-C (SIGINT): start it with SIGINT's default action.

    A shell that starts ``make test`` in the background (``make test &``, a CI runner's job without job control)
    sets SIGINT to ignored, and an ignored signal stays ignored across fork and exec; Python then installs no
    KeyboardInterrupt handler, so the child would never see the Ctrl-C the test sends."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
