"""Push buttons: debounce, then press / long / double gestures.

A contact change counts only once the contact has stayed put for ``debounce_ms`` (bounce is a few
milliseconds of chatter on both edges). Gestures:

``press``
    pressed and released before ``long_ms``; for a button with double-press detection, reported
    once ``double_ms`` have passed without a second press.
``long``
    held for ``long_ms``; reported while still held (the release then reports nothing).
``double``
    two presses, the second starting within ``double_ms`` of the first release.
``hold``
    for a button with hold detection, still held ``hold_ms`` (3 s) after it went down; comes
    after its ``long`` (the Pair button: hold it 3 s to calibrate the box's audio latency).

Examples
--------
>>> b = Button("mix")
>>> [b.update(p, t) for p, t in ((True, 0), (True, 30), (False, 100), (False, 130))]
[None, None, None, 'press']
"""

from .ticks import ticks_diff


class Button:
    """One button's debouncer and gesture recogniser (feed it the raw contact every few ms)."""

    def __init__(self, name: str, *, debounce_ms: int = 20, long_ms: int = 800, double_ms: int = 300,
                 double: bool = False, hold: bool = False, hold_ms: int = 3000) -> None:
        self.name = name
        self.hold = hold
        self.hold_ms = hold_ms
        self.hold_sent = False
        self.debounce_ms = debounce_ms
        self.long_ms = long_ms
        self.double_ms = double_ms
        self.double = double
        self.raw = False
        self.raw_ms = 0
        self.pressed = False  # the debounced state
        self.down_ms = 0
        self.up_ms = 0
        self.long_sent = False
        self.waiting = False  # released once, a second press may still come
        self.second = False

    def update(self, raw: bool, now_ms: int) -> str | None:
        """Feed the raw contact (True = closed); returns a gesture name or None."""
        if raw != self.raw:
            self.raw = raw
            self.raw_ms = now_ms
        if self.raw != self.pressed and ticks_diff(now_ms, self.raw_ms) >= self.debounce_ms:
            self.pressed = self.raw
            return self._edge(now_ms)
        if self.pressed:
            if not self.long_sent and ticks_diff(now_ms, self.down_ms) >= self.long_ms:
                self.long_sent = True
                self.waiting = False
                self.second = False
                return "long"
            if self.hold and self.long_sent and not self.hold_sent and ticks_diff(now_ms, self.down_ms) >= self.hold_ms:
                self.hold_sent = True
                return "hold"
        elif self.waiting and ticks_diff(now_ms, self.up_ms) >= self.double_ms:
            self.waiting = False
            return "press"
        return None

    def _edge(self, now_ms: int) -> str | None:
        if self.pressed:
            self.down_ms = now_ms
            self.long_sent = False
            self.hold_sent = False
            if self.waiting:
                self.waiting = False
                self.second = True
            return None
        self.up_ms = now_ms
        if self.long_sent:
            self.long_sent = False
            return None
        if self.second:
            self.second = False
            return "double"
        if self.double:
            self.waiting = True
            return None
        return "press"
