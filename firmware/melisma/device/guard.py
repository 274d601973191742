"""Rejected requests are counted, not shouted: bounded logging and dropping of misbehaving centrals.

Anyone in radio range can connect to the box and write to it; every such write from a central
that has not bonded is refused with an ATT error (that is the security model). Bumble logs an
exception raised by a write *command* (write without response) with its full traceback, which
let a stranger fill the box's log at hundreds of kB per second. Here:

* :class:`RejectionGuard` counts refusals per connection and logs them at most once per
  ``interval_s`` per connection, as one line with the count and the latest reason;
* a connection refused more than ``drop_after`` times within one interval is dropped;
* :func:`quiet_expected_rejections` stops Bumble's GATT server from logging a traceback for an
  ATT error the box raised on purpose (unexpected exceptions are still logged in full).

Examples
--------
>>> from melisma.device.guard import RejectionGuard
>>> t = [0.0]
>>> guard = RejectionGuard(interval_s=10, drop_after=5, clock=lambda: t[0])
>>> [guard.refuse("conn-1", "not bonded") for _ in range(7)].index("drop")  # the 6th is one too many
5
>>> guard.stats("conn-1")["refused"], guard.stats("conn-1")["logged"]
(7, 2)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

logger = logging.getLogger(__name__)

#: Seconds between two log lines about one connection's refused requests.
REJECTION_LOG_INTERVAL_S = 10.0
#: Refusals within one interval after which a connection is dropped.
DROP_AFTER_REJECTIONS = 200


@dataclass
class _Counter:
    refused: int = 0
    unlogged: int = 0
    window_start: float = 0.0
    in_window: int = 0
    last_log: float | None = None
    logged: int = 0
    dropped: bool = False
    latest: str = ""
    peer: str = ""


class RejectionGuard:
    """Counts refused requests per connection; logs them at most once per interval; says when to drop."""

    def __init__(self, *, interval_s: float = REJECTION_LOG_INTERVAL_S, drop_after: int = DROP_AFTER_REJECTIONS,
                 clock: Callable[[], float] = time.monotonic):
        self.interval_s = interval_s
        self.drop_after = drop_after
        self.clock = clock
        self._counters: dict[Hashable, _Counter] = {}

    def refuse(self, connection: Hashable, reason: str, *, peer: str | None = None) -> str:
        """Count one refusal; returns ``"drop"`` once when the connection should be dropped, else ``""``."""
        c = self._counters.setdefault(connection, _Counter(window_start=self.clock()))
        now = self.clock()
        c.refused += 1
        c.unlogged += 1
        c.latest = reason
        if now - c.window_start >= self.interval_s:
            c.window_start, c.in_window = now, 0
        c.in_window += 1
        who = c.peer = peer or str(connection)
        if c.last_log is None or now - c.last_log >= self.interval_s:
            logger.warning("refused %d request(s) from %s%s (latest: %s)", c.unlogged, who,
                           "" if c.last_log is None else f" in the last {now - c.last_log:.0f} s", reason)
            c.last_log, c.unlogged = now, 0
            c.logged += 1
        if not c.dropped and self.drop_after and c.in_window > self.drop_after:
            c.dropped = True
            logger.warning("dropping %s: %d refused requests within %.0f s (%d in all)", who, c.in_window,
                           self.interval_s, c.refused)
            c.logged += 1
            c.unlogged = 0
            return "drop"
        return ""

    def stats(self, connection: Hashable) -> dict[str, int | bool]:
        """Counts for one connection (refused, logged lines, dropped)."""
        c = self._counters.get(connection, _Counter())
        return {"refused": c.refused, "logged": c.logged, "dropped": c.dropped}

    def forget(self, connection: Hashable) -> None:
        """The connection is gone: drop its counters (a final line if refusals went unlogged)."""
        c = self._counters.pop(connection, None)
        if c is not None and c.unlogged:
            logger.warning("refused %d more request(s) from %s before it disconnected (latest: %s)", c.unlogged,
                           c.peer or connection, c.latest)


class _ExpectedRejections(logging.Filter):
    """Drops Bumble's traceback for an ATT error the box raised on purpose (a refusal, not a bug)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from bumble.att import ATT_Error

        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, ATT_Error)


_FILTER = _ExpectedRejections()


def quiet_expected_rejections() -> None:
    """Install the filter on Bumble's GATT server logger (idempotent)."""
    log = logging.getLogger("bumble.gatt_server")
    if _FILTER not in log.filters:
        log.addFilter(_FILTER)


__all__ = ["DROP_AFTER_REJECTIONS", "REJECTION_LOG_INTERVAL_S", "RejectionGuard", "quiet_expected_rejections"]
