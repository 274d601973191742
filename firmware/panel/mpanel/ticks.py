"""Millisecond tick arithmetic that wraps like MicroPython's ``time.ticks_ms()``.

The core never reads a clock: every call gets ``now_ms`` from the caller (``time.ticks_ms()`` on
the Pico and the unix port, any integer counter in tests). Differences go through
:func:`ticks_diff` so the 2**30 wrap of the Pico's tick counter (about 12 days) is harmless.
"""

#: MicroPython's tick period (``time.ticks_add(0, -1) + 1`` on every port).
TICKS_PERIOD = 1 << 30
_HALF = TICKS_PERIOD // 2


def ticks_diff(a: int, b: int) -> int:
    """``a - b`` in ticks, correct across a wrap (the result is in -2**29..2**29-1)."""
    return ((a - b + _HALF) % TICKS_PERIOD) - _HALF


def ticks_add(a: int, delta: int) -> int:
    """``a + delta`` on the wrapping tick counter."""
    return (a + delta) % TICKS_PERIOD
