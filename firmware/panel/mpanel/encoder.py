"""Rotary encoder decoding for detented encoders (EC11 class), plus acceleration.

Why not count edges or latch on one state (what popular MicroPython drivers do)
-------------------------------------------------------------------------------
* Drivers that count every edge and divide by 4 (``round(count / div)``) report a step half-way
  between detents; contact bounce or one missed edge shifts the count against the detents for
  good, and from then on a reversal at a detent loses or doubles a step.
* Drivers with a state table that fires on reaching one fixed state (Buxton-style tables fire on
  entering ``11``) lose one step at every reversal when the encoder's detents rest on another
  state (``00``: other wiring, inverting Schmitt triggers) — the rest position is then in the
  middle of the table's cycle.

This decoder tracks the absolute position in quarter steps along the Gray-code cycle, knows
which state the detents rest on, and reports a detent only when the position *arrives* at a
detent different from the last one reported: a full quadrature cycle from detent to detent.
Bounce on one contact moves the position back and forth by one quarter step and never reaches
another detent; turning half-way and back reports nothing; a reversal right at a detent reports
exactly one step the other way. When both contacts change between two samples (a missed state
in a fast turn) the move is taken as two quarter steps in the direction of the last good step,
which keeps the position in phase with the detents.

``update`` does no allocation and no floating point, so the Pico calls it from a pin interrupt.

Examples
--------
>>> d = QuadratureDecoder(detent_state=0b11)
>>> for s in (0b10, 0b00, 0b01, 0b11):   # one detent forward (A leads)
...     d.update(s)
>>> d.take()
1
>>> for s in (0b01, 0b00, 0b01, 0b11):   # half-way back and return: nothing
...     d.update(s)
>>> d.take()
0
"""

from .ticks import ticks_diff

# position of each state (A << 1 | B) along the forward Gray-code cycle 00 -> 01 -> 11 -> 10
_POSITION = (0, 1, 3, 2)


class QuadratureDecoder:
    """Gray-code state decoder that counts whole detents.

    Parameters
    ----------
    detent_state : int
        The state ``A << 1 | B`` the contacts are in when the knob rests in a detent: ``0b11`` for
        an EC11 with pull-ups and the common pin to ground (the usual wiring), ``0b00`` when inverted.
    steps_per_detent : int
        Quarter steps from one detent to the next: 4 (a full quadrature cycle per detent, EC11 with
        as many pulses as detents), 2 (two detents per cycle) or 1.
    initial_state : int or None
        The state read at start-up (default: ``detent_state``). A knob not resting in a detent at
        start-up counts from the nearest detent.
    reverse : bool
        Swap the sign of the steps (A and B wired the other way round).
    """

    def __init__(self, detent_state: int = 0b11, steps_per_detent: int = 4, initial_state: int | None = None,
                 reverse: bool = False) -> None:
        if steps_per_detent not in (1, 2, 4):
            raise ValueError(f"steps_per_detent {steps_per_detent!r}: use 1, 2 or 4")
        if not 0 <= detent_state <= 3:
            raise ValueError(f"detent_state {detent_state!r}: use 0b00..0b11")
        self.steps_per_detent = steps_per_detent
        self.detent_state = detent_state
        self.reverse = reverse
        state = detent_state if initial_state is None else initial_state & 3
        self.state = state
        offset = (_POSITION[state] - _POSITION[detent_state]) & 3
        self.quarter = offset - 4 if offset > 2 else offset  # nearest detent is 0
        self.reported = 0
        self.pending = 0
        self.last_dir = 1
        #: times both contacts changed between two samples (a sample was missed)
        self.skipped = 0

    def update(self, state: int) -> None:
        """Feed the contacts' current state ``A << 1 | B`` (call on every edge, or poll often)."""
        state &= 3
        move = (_POSITION[state] - _POSITION[self.state]) & 3
        if move == 0:
            return
        self.state = state
        if move == 1:
            step = 1
            self.last_dir = 1
        elif move == 3:
            step = -1
            self.last_dir = -1
        else:
            self.skipped += 1
            step = 2 * self.last_dir
        q = self.quarter + step
        self.quarter = q
        spd = self.steps_per_detent
        base = self.reported * spd
        if q % spd == 0:
            n = q // spd
            if n != self.reported:
                self.pending += n - self.reported
                self.reported = n
        elif q > base + spd:  # went past the next detent without a sample on it
            self.pending += 1
            self.reported += 1
        elif q < base - spd:
            self.pending -= 1
            self.reported -= 1

    def take(self) -> int:
        """Detents counted since the last call (positive forward), and forget them.

        On the Pico call it with interrupts disabled (``machine.disable_irq``).
        """
        n = self.pending
        self.pending = 0
        shift = self.reported * self.steps_per_detent
        self.quarter -= shift  # keep the numbers small
        self.reported = 0
        return -n if self.reverse else n


class Accelerator:
    """Multiplies detents when the knob turns fast, so a long way takes one flick.

    The first detent after a change of direction (or after a pause) always counts once: a
    reversal at a detent is never multiplied.

    Parameters
    ----------
    fast_ms, faster_ms : int
        Detents closer together than these get ``fast_gain`` and ``faster_gain``.
    """

    def __init__(self, fast_ms: int = 60, faster_ms: int = 25, fast_gain: int = 2, faster_gain: int = 4) -> None:
        self.fast_ms = fast_ms
        self.faster_ms = faster_ms
        self.fast_gain = fast_gain
        self.faster_gain = faster_gain
        self.last_ms = 0
        self.last_dir = 0

    def feed(self, detents: int, now_ms: int) -> int:
        """Steps to apply for ``detents`` counted at ``now_ms``."""
        if detents == 0:
            return 0
        direction = 1 if detents > 0 else -1
        gain = 1
        if direction == self.last_dir:
            per_detent = ticks_diff(now_ms, self.last_ms) // abs(detents)
            if per_detent < self.faster_ms:
                gain = self.faster_gain
            elif per_detent < self.fast_ms:
                gain = self.fast_gain
        self.last_ms = now_ms
        self.last_dir = direction
        return detents * gain
