"""Stop training cleanly on a signal: finish the rollout, write a checkpoint, exit.

Signals: SIGINT (Ctrl-C), SIGTERM (``kill``, SLURM cancellation/preemption) and, where it
exists, SIGUSR2 (what SLURM sends ``signal_delay_s`` before a time limit through Hydra's
submitit launcher).
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType, TracebackType
from typing import Any

log = logging.getLogger(__name__)
SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGUSR2") if hasattr(signal, name)
)


class GracefulInterrupt:
    """Context manager that turns the first of :data:`SIGNALS` into a stop request.

    Training polls :attr:`requested` at rollout boundaries, writes a checkpoint and returns.
    A second SIGINT raises ``KeyboardInterrupt`` at once (the user insists); repeated
    SIGTERM/SIGUSR2 (schedulers may send them more than once) are logged and ignored.
    Handlers are installed only in the main thread (Python allows no other) and the previous
    ones are restored on exit; :attr:`previous` keeps them, e.g. to hand a SIGUSR2 on to
    submitit's requeue handler after the checkpoint.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        """Whether a stop was requested."""
        return self.signum is not None

    def __enter__(self) -> GracefulInterrupt:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self.previous[int(sig)] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.signum is not None:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            log.warning("received %s again: still stopping at the end of this rollout", name)
            return
        self.signum = signum
        log.warning("received %s: stopping after this rollout with a checkpoint (Ctrl-C again: stop at once)", name)
