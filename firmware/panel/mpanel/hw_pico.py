"""The thin hardware layer on a Raspberry Pi Pico: pins, WS2812 ring, SSD1306 OLED, USB serial.

Everything that touches ``machine`` lives here; the pin numbers come from :mod:`mpanel.pins`.
``tools/panel-sim`` runs this same class on the MicroPython unix port over stand-in ``machine``,
``neopixel`` and ``ssd1306`` modules (firmware/panel/sim/).

The data channel to the box is a second USB serial port (micropython-lib ``usb-device-cdc``,
installed by ``tools/flash-panel``), so the first one stays a plain REPL: a hobbyist can always
get in with ``mpremote`` or a terminal. Without that package (or with the ``stdio`` option) the
panel talks over the REPL's own port; Ctrl-C still stops it there.
"""

import asyncio
import sys

import machine
import neopixel
from machine import Pin

from . import pins
from .encoder import QuadratureDecoder
from .protocol import MAX_LINE

try:
    from typing import TYPE_CHECKING
except ImportError:  # MicroPython: no typing module, annotations are not evaluated
    TYPE_CHECKING = False
if TYPE_CHECKING:
    from .app import Transport


class StreamTransport:
    """Lines over a MicroPython stream (a USB CDC interface, or stdin/stdout)."""

    def __init__(self, stream_in: object, stream_out: object) -> None:
        self.reader = asyncio.StreamReader(stream_in)
        self.out = stream_out
        self.partial = b""

    async def readline(self) -> bytes:
        """The next whole line (a line can arrive in several USB packets); b"" when nothing came."""
        while True:
            chunk = await self.reader.readline()
            if not chunk:
                return b""
            self.partial += chunk
            if self.partial[-1:] == b"\n" or len(self.partial) > MAX_LINE:
                line = self.partial
                self.partial = b""
                return line

    def write(self, data: bytes) -> object:
        try:
            return self.out.write(data)  # type: ignore[attr-defined]
        except OSError:
            return 0  # nobody reading (the box is off): drop the line, the heartbeat says so


def open_data_channel() -> object | None:
    """A second USB CDC serial port beside the REPL, or None when usb-device-cdc is missing."""
    try:
        import usb.device
        from usb.device.cdc import CDCInterface
    except ImportError:
        return None
    cdc = CDCInterface()
    cdc.init(timeout=0)  # writes never block: a box that is not reading never stalls the panel
    usb.device.get().init(cdc, builtin_driver=True)  # builtin_driver keeps the REPL port
    return cdc


def stdio_transport() -> StreamTransport:
    out = getattr(sys.stdout, "buffer", sys.stdout)
    return StreamTransport(sys.stdin, out)


class PicoHardware:
    """Encoder (interrupt-driven decoder), buttons, LED ring, optional OLED, and the transport.

    Parameters
    ----------
    transport : object or None
        Where lines go; default: the second USB serial port, else stdin/stdout.
    brightness : int
        0..255, scales every LED colour (the ring is bright; 64 is plenty indoors).
    detent_state, steps_per_detent, reverse
        Passed to :class:`mpanel.encoder.QuadratureDecoder` (defaults fit an EC11 wired as in
        hardware/README.md).
    """

    def __init__(self, transport: "Transport | None" = None, *, brightness: int = 64, n_leds: int = pins.LED_COUNT,
                 detent_state: int = 0b11, steps_per_detent: int = 4, reverse: bool = False) -> None:
        self.brightness = max(0, min(255, brightness))
        self.pin_a = Pin(pins.ENCODER_A, Pin.IN, Pin.PULL_UP)
        self.pin_b = Pin(pins.ENCODER_B, Pin.IN, Pin.PULL_UP)
        self.decoder = QuadratureDecoder(detent_state, steps_per_detent, self._contacts(), reverse)
        trigger = Pin.IRQ_RISING | Pin.IRQ_FALLING
        self.pin_a.irq(self._on_edge, trigger)
        self.pin_b.irq(self._on_edge, trigger)
        self.button_pins = {}
        for name, gpio in pins.BUTTONS:
            self.button_pins[name] = Pin(gpio, Pin.IN, Pin.PULL_UP)
        self.n_leds = n_leds
        self.strip = neopixel.NeoPixel(Pin(pins.LED_DATA, Pin.OUT), n_leds)
        self.oled = self._find_oled()
        self.has_oled = self.oled is not None
        if transport is None:
            cdc = open_data_channel()
            transport = StreamTransport(cdc, cdc) if cdc is not None else stdio_transport()
        self.transport: Transport = transport

    # -- encoder and buttons ---------------------------------------------------------------

    def _contacts(self) -> int:
        return (self.pin_a.value() << 1) | self.pin_b.value()

    def _on_edge(self, pin: Pin) -> None:
        # runs in the interrupt: both contacts are read, so a missed edge shows as a double step
        self.decoder.update((self.pin_a.value() << 1) | self.pin_b.value())

    def encoder_take(self) -> int:
        state = machine.disable_irq()
        try:
            return self.decoder.take()
        finally:
            machine.enable_irq(state)

    def button_raw(self, name: str) -> bool:
        pin = self.button_pins.get(name)
        return pin is not None and pin.value() == 0  # closed to ground = pressed

    # -- LEDs and OLED -----------------------------------------------------------------------

    def show_leds(self, colours: list[tuple[int, int, int]], mode: str) -> None:
        b = self.brightness
        for i in range(min(self.n_leds, len(colours))):
            r, g, bl = colours[i]
            self.strip[i] = ((r * b) // 255, (g * b) // 255, (bl * b) // 255)
        self.strip.write()

    def _find_oled(self) -> object | None:
        try:
            i2c = machine.I2C(pins.I2C_ID, sda=Pin(pins.I2C_SDA), scl=Pin(pins.I2C_SCL), freq=400_000)
            if pins.OLED_ADDRESS not in i2c.scan():
                return None
            import ssd1306
        except (ImportError, OSError, ValueError):
            return None  # no display fitted, or its driver is not installed: LEDs only
        return ssd1306.SSD1306_I2C(pins.OLED_WIDTH, pins.OLED_HEIGHT, i2c, addr=pins.OLED_ADDRESS)

    def show_screen(self, lines: list[str]) -> None:
        oled = self.oled
        if oled is None:
            return
        oled.fill(0)  # type: ignore[attr-defined]
        for row in range(len(lines)):
            if lines[row]:
                oled.text(lines[row], 0, row * 8, 1)  # type: ignore[attr-defined]
        oled.show()  # type: ignore[attr-defined]


def safe_mode_requested() -> bool:
    """True while the safe-mode button is held (read at power-on by main.py)."""
    for name, gpio in pins.BUTTONS:
        if name == pins.SAFE_MODE_BUTTON:
            return Pin(gpio, Pin.IN, Pin.PULL_UP).value() == 0
    return False
