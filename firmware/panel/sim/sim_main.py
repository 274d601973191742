"""The panel simulator's MicroPython side: the real panel code over stand-in pins.

Run by tools/panel-sim on the MicroPython unix port with MICROPYPATH=.frozen:firmware/panel/sim:
firmware/panel. It talks to tools/panel-sim over its standard input and output, one line each:

stdin  ``S <line>``  a line the box sent over the serial port (without the newline)
stdin  ``H <cmd>``   a simulated hardware command (``turn +3``, ``press mix``, ``hold pair 1.5``, ...)
stdout ``S <line>``  a line the panel sends to the box
stdout ``O <text>``  what the panel shows (``LEDS ...``, ``OLED ...``, ``LINK ...``) or a command's
                     result (``OK ...``, ``ERROR ...``), printed by tools/panel-sim as it is

Options: ``--leds N`` (ring size, default 12), ``--no-oled``, ``--brightness B`` (0..255, default 255
so the printed colours are the panel's own), ``--trace`` (also print ``SENT``/``RECV`` lines).
"""

import asyncio
import sys

import machine
import neopixel
import ssd1306
from mpanel import pins
from mpanel.app import PanelApp
from mpanel.hw_pico import PicoHardware

BUTTON_GPIO = {}
for _name, _gpio in pins.BUTTONS:
    BUTTON_GPIO[_name] = _gpio

# contact bounce on each edge a finger makes: the level chatters this way before settling
BOUNCE = (1, 0, 1, 0)
DETENT_MS = 120  # default time per detent of a `turn` (slow enough for no acceleration)


def out(text):
    print("O " + text)


class SimTransport:
    """Lines from stdin ``S`` records; writes go to stdout as ``S`` records."""

    def __init__(self, trace):
        self.lines = []
        self.flag = asyncio.Event()
        self.trace = trace

    def put(self, line):
        self.lines.append(line)
        self.flag.set()

    async def readline(self):
        while not self.lines:
            self.flag.clear()
            await self.flag.wait()
        line = self.lines.pop(0)
        if self.trace:
            out("RECV " + line.decode().rstrip())
        return line

    def write(self, data):
        text = data.decode().rstrip()
        print("S " + text)
        if self.trace:
            out("SENT " + text)
        return len(data)


def hexes(colours):
    return " ".join(f"{c[0]:02X}{c[1]:02X}{c[2]:02X}" for c in colours)


class Sim:
    def __init__(self, argv):
        self.n_leds = pins.LED_COUNT
        self.brightness = 255
        self.trace = False
        oled = True
        i = 0
        while i < len(argv):
            a = argv[i]
            if a == "--leds":
                i += 1
                self.n_leds = int(argv[i])
            elif a == "--no-oled":
                oled = False
            elif a == "--brightness":
                i += 1
                self.brightness = int(argv[i])
            elif a == "--trace":
                self.trace = True
            i += 1
        machine.oled_fitted = oled
        neopixel.on_write = self.on_leds
        ssd1306.on_show = self.on_oled
        self.transport = SimTransport(self.trace)
        self.hw = PicoHardware(self.transport, brightness=self.brightness, n_leds=self.n_leds)
        self.app = PanelApp(self.hw)
        self.commands = []
        self.command_flag = asyncio.Event()
        self.link = None
        self.last_leds = None
        self.done = False

    # -- what the panel shows -----------------------------------------------------------

    def on_leds(self, strip):
        text = self.app.led_mode + " " + hexes(strip.pixels)
        if text != self.last_leds:
            self.last_leds = text
            out("LEDS " + text)

    def on_oled(self, oled):
        out("OLED " + "|".join(row.rstrip() for row in oled.rows))

    def watch_link(self):
        state = self.app.state
        link = (state.link, state.box_name, state.box_software)
        if link != self.link:
            self.link = link
            if state.link:
                out(f"LINK up {state.box_name} {state.box_software}")
            else:
                out("LINK down")

    # -- the simulated hands ----------------------------------------------------------------

    async def set_pin(self, gpio, level, bounce):
        if bounce:
            for b in BOUNCE:
                machine.drive(gpio, level if b else 1 - level)
                await asyncio.sleep_ms(1)
        machine.drive(gpio, level)

    async def detent(self, forward, ms):
        a, b = pins.ENCODER_A, pins.ENCODER_B
        # from the detent (both contacts open = 11): forward A leads (B falls first)
        order = ((b, 0), (a, 0), (b, 1), (a, 1)) if forward else ((a, 0), (b, 0), (a, 1), (b, 1))
        step_ms = max(1, ms // 5)
        for k in range(4):
            gpio, level = order[k]
            await self.set_pin(gpio, level, bounce=(k in (0, 3)))
            await asyncio.sleep_ms(step_ms)
        await asyncio.sleep_ms(max(0, ms - 4 * step_ms))

    async def hold(self, gpio, ms):
        await self.set_pin(gpio, 0, True)
        await asyncio.sleep_ms(ms)
        await self.set_pin(gpio, 1, True)

    async def run_command(self, text):
        words = text.split()
        if not words:
            return
        verb = words[0]
        if verb == "turn":
            if len(words) not in (2, 3) or words[1][:1] not in "+-" or not words[1][1:].isdigit():
                raise ValueError("use 'turn +N' or 'turn -N' (detents), optionally ms per detent")
            n = int(words[1])
            ms = int(words[2]) if len(words) == 3 else DETENT_MS
            if not 1 <= ms <= 2000:
                raise ValueError(f"ms per detent {ms} is out of range; use 1..2000")
            for _ in range(abs(n)):
                await self.detent(n > 0, ms)
        elif verb in ("press", "hold", "double"):
            if len(words) < 2 or words[1] not in BUTTON_GPIO:
                name = words[1] if len(words) > 1 else ""
                raise ValueError(f"unknown button {name!r}; use mix, pair, mode or knob")
            gpio = BUTTON_GPIO[words[1]]
            if verb == "press":
                await self.hold(gpio, 100)
            elif verb == "double":
                await self.hold(gpio, 80)
                await asyncio.sleep_ms(120)
                await self.hold(gpio, 80)
            else:
                if len(words) != 3:
                    raise ValueError("use 'hold NAME SECONDS'")
                seconds = float(words[2])
                if not 0 < seconds <= 60:
                    raise ValueError(f"hold time {words[2]} s is out of range; use 0..60")
                await self.hold(gpio, int(seconds * 1000))
        elif verb == "quit":
            self.done = True
        else:
            raise ValueError(f"unknown command {verb!r}; use turn, press, hold, double or quit")

    async def command_loop(self):
        while not self.done:
            while not self.commands:
                self.command_flag.clear()
                await self.command_flag.wait()
            text = self.commands.pop(0)
            try:
                await self.run_command(text)
            except ValueError as exc:
                out(f"ERROR {text}: {exc}")
            else:
                out("OK " + text)

    async def watch_loop(self):
        while not self.done:
            self.watch_link()
            await asyncio.sleep_ms(20)

    async def stdin_loop(self):
        reader = asyncio.StreamReader(sys.stdin)
        while not self.done:
            raw = await reader.readline()
            if not raw:
                self.done = True
                break
            if raw[:2] == b"S ":
                self.transport.put(raw[2:])
            elif raw[:2] == b"H ":
                self.commands.append(raw[2:].decode().strip())
                self.command_flag.set()

    async def main(self):
        self.app.start()
        self.tasks = [asyncio.create_task(self.command_loop()), asyncio.create_task(self.watch_loop()),
                      asyncio.create_task(self.stdin_loop())]
        while not self.done:
            await asyncio.sleep_ms(20)
        self.app.running = False


asyncio.run(Sim(sys.argv[1:]).main())
