"""Stop requests: SIGTERM or SIGINT sets a flag the training loop reads between steps, so it can checkpoint and exit.

A second Ctrl-C stops at once, without a checkpoint. The handlers are installed only from the main thread (Python
allows no other) and the previous ones come back on :meth:`StopFlag.uninstall`.

Example::

    from training.signals import StopFlag
    stop = StopFlag()
    stop.install()
    ...  # the loop: `if stop.requested: checkpoint, then break`
    stop.uninstall()
"""

from __future__ import annotations

import logging
import signal

log = logging.getLogger(__name__)

__all__ = ["StopFlag"]


class StopFlag:
    """Whether (and by which signal) a stop was asked for; ``install`` routes SIGTERM and SIGINT to it."""

    def __init__(self) -> None:
        self.requested = False
        self.signum = None
        self._old = {}

    def install(self) -> None:
        import threading

        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:  # a second Ctrl-C: stop now, without a checkpoint
            raise KeyboardInterrupt
        self.requested, self.signum = True, signum
        log.warning("got %s: checkpointing at the end of this step, then exiting", signal.Signals(signum).name)

    def uninstall(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
