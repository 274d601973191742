"""The panel's main loop: joins the pure core to a hardware layer with asyncio.

The hardware object (``hw_pico.PicoHardware`` on the Pico, the same class over stand-in pins in
``tools/panel-sim``) provides::

    n_leds, has_oled                 what is fitted
    encoder_take() -> int            detents counted by the encoder interrupt since the last call
    button_raw(name) -> bool         the raw contact of button ``name`` (True = closed)
    show_leds(colours, mode)         write the LED ring
    show_screen(lines)               draw eight text lines on the OLED (if fitted)
    transport                        ``await transport.readline() -> bytes`` and ``transport.write(bytes)``
"""

import asyncio
import time

try:
    from typing import TYPE_CHECKING
except ImportError:  # MicroPython has no typing module; the annotations below are never evaluated there
    TYPE_CHECKING = False

from .buttons import Button
from .encoder import Accelerator
from .protocol import MAX_LINE, Receiver, Sender
from .state import BUTTON_NAMES, PanelState

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Protocol

    class Transport(Protocol):
        async def readline(self) -> bytes: ...

        def write(self, data: bytes) -> object: ...

    class Hardware(Protocol):
        n_leds: int
        has_oled: bool
        transport: Transport

        def encoder_take(self) -> int: ...

        def button_raw(self, name: str) -> bool: ...

        def show_leds(self, colours: list[tuple[int, int, int]], mode: str) -> None: ...

        def show_screen(self, lines: list[str]) -> None: ...


def ticks_now() -> int:
    """``time.ticks_ms()`` as the plain int the core computes with (same wrap, see mpanel.ticks)."""
    return time.ticks_ms()  # type: ignore[return-value]  # the stubs make ticks an opaque type


#: Inputs are polled this often; LEDs and OLED are refreshed this often (only when changed).
POLL_MS = 5
DISPLAY_MS = 50


class PanelApp:
    """One panel: state, protocol counters, buttons, acceleration, and the hardware."""

    def __init__(self, hw: "Hardware", clock: "Callable[[], int] | None" = None) -> None:
        self.hw = hw
        self.clock = clock or ticks_now
        self.state = PanelState(hw.n_leds, hw.has_oled)
        self.buttons = [Button(name, double=(name == "knob"), hold=(name == "pair")) for name in BUTTON_NAMES]
        self.accel = Accelerator()
        self.sender = Sender()
        self.receiver = Receiver()
        self.led_mode = ""
        self._frame: list[tuple[int, int, int]] = []
        self._lines: list[str] = []
        self.running = True

    def send(self, items: list[tuple[str, list[str]]]) -> None:
        now = self.clock()
        for verb, args in items:
            try:
                line = self.sender.line(verb, args)
            except ValueError:
                continue  # too long or unsafe: never sent (the state made it; it is a bug)
            self.hw.transport.write(line)
            self.state.sent(now)

    def poll_inputs(self) -> None:
        """Read the encoder and buttons once, and let time pass for the state."""
        now = self.clock()
        detents = self.hw.encoder_take()
        if detents:
            self.send(self.state.on_turn(self.accel.feed(detents, now), now))
        for button in self.buttons:
            gesture = button.update(self.hw.button_raw(button.name), now)
            if gesture is not None:
                self.send(self.state.on_button(button.name, gesture, now))
        self.send(self.state.tick(now))

    def on_line(self, line: bytes) -> None:
        """One line from the box."""
        got = self.receiver.feed(line)
        if got is not None:
            _seq, verb, args = got
            self.send(self.state.on_box(verb, args, self.clock()))

    def refresh(self) -> None:
        """Write LEDs and OLED if what they should show changed."""
        now = self.clock()
        mode, frame = self.state.leds(now)
        if frame != self._frame or mode != self.led_mode:
            self._frame = frame
            self.led_mode = mode
            self.hw.show_leds(frame, mode)
        if self.hw.has_oled:
            lines = self.state.screen(now)
            if lines != self._lines:
                self._lines = lines
                self.hw.show_screen(lines)

    async def input_loop(self) -> None:
        while self.running:
            self.poll_inputs()
            await asyncio.sleep_ms(POLL_MS)

    async def serial_loop(self) -> None:
        while self.running:
            line = await self.hw.transport.readline()
            if not line:
                await asyncio.sleep_ms(100)
                continue
            if len(line) <= MAX_LINE:
                self.on_line(line)

    async def display_loop(self) -> None:
        while self.running:
            self.refresh()
            await asyncio.sleep_ms(DISPLAY_MS)

    def start(self) -> "list[asyncio.Task[None]]":
        """Start the three loops as tasks (returns them)."""
        return [asyncio.create_task(self.input_loop()), asyncio.create_task(self.serial_loop()),
                asyncio.create_task(self.display_loop())]
