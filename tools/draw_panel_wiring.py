#!/usr/bin/env python3
"""Draw the front panel's wiring picture and pin table from the pins the firmware uses.

    python tools/draw_panel_wiring.py            # write hardware/panel-wiring.svg and the table in hardware/README.md
    python tools/draw_panel_wiring.py --check    # exit 1 if either is out of date (a test runs this)

The single source of truth is firmware/panel/mpanel/pins.py: the Pico hardware layer reads its
pin numbers from there, and so does this script, so the picture cannot drift from the code.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from xml.sax.saxutils import escape

ROOT = Path(__file__).resolve().parents[1]
PINS_FILE = ROOT / "firmware" / "panel" / "mpanel" / "pins.py"
SVG_FILE = ROOT / "hardware" / "panel-wiring.svg"
README = ROOT / "hardware" / "README.md"
BEGIN, END = "<!-- panel-pins:begin (tools/draw_panel_wiring.py writes this table) -->", "<!-- panel-pins:end -->"


def load_pins():
    spec = importlib.util.spec_from_file_location("panel_pins", PINS_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pin_table(pins) -> str:
    rows = ["| signal | Pico GPIO | Pico pin | goes to |", "|---|---|---|---|"]
    for signal, gpio, physical, where in pins.wiring():
        rows.append(f"| {signal} | GP{gpio} | {physical} | {where} |")
    rows.append(f"| 3V3 | — | {pins.PIN_3V3} | OLED VCC, (optional) external pull-ups |")
    rows.append(f"| VBUS (5 V from the Pi's USB) | — | {pins.PIN_VBUS} | WS2812 ring 5V |")
    rows.append(f"| GND | — | {', '.join(map(str, pins.GROUND_PINS))} | encoder C, buttons, OLED GND, ring GND |")
    return "\n".join(rows)


# -- the picture -----------------------------------------------------------------------------

W, H = 1000, 790
PICO_X, PICO_Y, PICO_W, PITCH = 400, 120, 200, 26
COLOURS = {"enc": "#1f77b4", "btn": "#2ca02c", "led": "#d62728", "i2c": "#9467bd", "pwr": "#ff7f0e", "gnd": "#333333"}


def pin_xy(physical: int) -> tuple[float, float, str]:
    """Where a header pin sits on the drawn Pico (pin 1 top left, 20 bottom left, 21 bottom right)."""
    if physical <= 20:
        return PICO_X, PICO_Y + 20 + (physical - 1) * PITCH, "left"
    return PICO_X + PICO_W, PICO_Y + 20 + (40 - physical) * PITCH, "right"


def text(x, y, s, size=13, anchor="start", colour="#000", weight="normal") -> str:
    return (f'<text x="{x:.0f}" y="{y:.0f}" font-family="DejaVu Sans, Arial, sans-serif" font-size="{size}" '
            f'text-anchor="{anchor}" fill="{colour}" font-weight="{weight}">{escape(s)}</text>')


def box(x, y, w, h, title) -> list[str]:
    return [f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="8" fill="#f7f7f7" stroke="#555" stroke-width="1.5"/>',
            text(x + w / 2, y + 18, title, 14, "middle", weight="bold")]


def route(points: list[tuple[float, float]], colour: str, label: str = "") -> list[str]:
    """A wire along ``points`` with dots at both ends and a label near its far end."""
    pts = " ".join(f"{x:.0f},{y:.0f}" for x, y in points)
    (x1, y1), (x2, y2) = points[0], points[-1]
    out = [f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="2.2" stroke-linejoin="round"/>',
           f'<circle cx="{x1:.0f}" cy="{y1:.0f}" r="3.5" fill="{colour}"/>',
           f'<circle cx="{x2:.0f}" cy="{y2:.0f}" r="3.5" fill="{colour}"/>']
    if label:
        lx = x2 + 8 if x2 < x1 else x2 - 8
        out.append(text(lx, y2 - 5, label, 11, "start" if x2 < x1 else "end", colour))
    return out


def wire(x1, y1, x2, y2, colour, label="", lane=None) -> list[str]:
    """Pin (x1, y1) to terminal (x2, y2) with the vertical run at ``lane``."""
    mid = (x1 + x2) / 2 if lane is None else lane
    return route([(x1, y1), (mid, y1), (mid, y2), (x2, y2)], colour, label)


def draw(pins) -> str:
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}">',
             f'<rect width="{W}" height="{H}" fill="white"/>',
             text(W / 2, 32, "Melisma front panel: Raspberry Pi Pico wiring", 20, "middle", weight="bold"),
             text(W / 2, 54, "drawn by tools/draw_panel_wiring.py from firmware/panel/mpanel/pins.py", 12, "middle",
                  "#666")]
    # the Pico and its header
    parts += [f'<rect x="{PICO_X}" y="{PICO_Y}" width="{PICO_W}" height="{20 * PITCH + 20}" rx="10" fill="#1b5e20" '
              f'stroke="#0b3d0b" stroke-width="2"/>',
              f'<rect x="{PICO_X + PICO_W / 2 - 22}" y="{PICO_Y - 14}" width="44" height="22" rx="3" fill="#bbb" '
              f'stroke="#777"/>',
              text(PICO_X + PICO_W / 2, PICO_Y - 20, "USB to the Raspberry Pi", 12, "middle"),
              text(PICO_X + PICO_W / 2, PICO_Y + 10 * PITCH + 20, "Raspberry Pi Pico", 16, "middle", "#fff", "bold")]
    used = {physical: signal for signal, _gpio, physical, _where in pins.wiring()}
    used[pins.PIN_3V3] = "3V3"
    used[pins.PIN_VBUS] = "VBUS"
    gpio_of = {v: k for k, v in pins.PHYSICAL_PIN.items()}
    for physical in range(1, 41):
        x, y, side = pin_xy(physical)
        label = f"GP{gpio_of[physical]}" if physical in gpio_of else ""
        if physical in pins.GROUND_PINS:
            label = "GND"
        label = {pins.PIN_3V3: "3V3", pins.PIN_VBUS: "VBUS"}.get(physical, label)
        fill = "#ffd54f" if physical in used else "#cfcfcf"
        parts.append(f'<circle cx="{x}" cy="{y}" r="6" fill="{fill}" stroke="#333"/>')
        inner = x + 12 if side == "left" else x - 12
        parts.append(text(inner, y + 4, f"{physical} {label}" if side == "left" else f"{label} {physical}", 10,
                          "start" if side == "left" else "end", "#fff"))

    def at(physical):
        x, y, side = pin_xy(physical)
        return (x - 6, y) if side == "left" else (x + 6, y)

    gnd = pins.GROUND_PINS
    left_lanes = iter(range(256, 392, 11))
    right_lanes = iter(range(740, 620, -14))

    def lw(physical: int, y: float, colour: str, label: str = "") -> list[str]:
        return wire(*at(physical), 240, y, colour, label, lane=next(left_lanes))

    def rw(physical: int, y: float, colour: str, label: str = "") -> list[str]:
        return wire(*at(physical), 760, y, colour, label, lane=next(right_lanes))
    # encoder with its push switch (left, top)
    parts += box(40, 90, 200, 150, "EC11 encoder")
    enc_terms = {"A": 125, "B": 150, "C (GND)": 175, "SW": 200, "SW (GND)": 225}
    for name, y in enc_terms.items():
        parts.append(text(232, y + 4, name, 12, "end"))
    parts += lw(pins.PHYSICAL_PIN[pins.ENCODER_A], enc_terms["A"], COLOURS["enc"], "A")
    parts += lw(pins.PHYSICAL_PIN[pins.ENCODER_B], enc_terms["B"], COLOURS["enc"], "B")
    knob_gpio = dict(pins.BUTTONS)["knob"]
    parts += lw(pins.PHYSICAL_PIN[knob_gpio], enc_terms["SW"], COLOURS["btn"], "knob")
    parts += lw(gnd[0], enc_terms["C (GND)"], COLOURS["gnd"])
    parts += lw(gnd[1], enc_terms["SW (GND)"], COLOURS["gnd"])
    # buttons (left, middle)
    y0 = 280
    for name, gpio in pins.BUTTONS:
        if name == "knob":
            continue
        parts += box(40, y0, 200, 50, f"{name.capitalize()} button")
        parts.append(text(232, y0 + 38, "to GND", 11, "end"))
        parts += lw(pins.PHYSICAL_PIN[gpio], y0 + 30, COLOURS["btn"], name)
        y0 += 70
    parts += lw(gnd[2], y0 - 70 + 40, COLOURS["gnd"])
    # OLED (left, bottom)
    parts += box(40, 520, 200, 130, "SSD1306 OLED 128x64")
    oled_terms = {"SDA": 555, "SCL": 580, "VCC": 605, "GND": 630}
    for name, y in oled_terms.items():
        parts.append(text(232, y + 4, name, 12, "end"))
    parts += lw(pins.PHYSICAL_PIN[pins.I2C_SDA], oled_terms["SDA"], COLOURS["i2c"], "SDA")
    parts += lw(pins.PHYSICAL_PIN[pins.I2C_SCL], oled_terms["SCL"], COLOURS["i2c"], "SCL")
    x3, y3 = at(pins.PIN_3V3)
    bottom = PICO_Y + 20 * PITCH + 34
    lane3 = next(left_lanes)
    parts += route([(x3, y3), (x3 + 30, y3), (x3 + 30, bottom), (lane3, bottom), (lane3, oled_terms["VCC"]),
                    (240, oled_terms["VCC"])], COLOURS["pwr"], "3V3")
    parts += lw(gnd[3], oled_terms["GND"], COLOURS["gnd"])
    # LED ring (right)
    parts += box(760, 300, 200, 130, f"WS2812 ring ({pins.LED_COUNT} LEDs)")
    ring_terms = {"DIN": 345, "5V": 370, "GND": 395}
    for name, y in ring_terms.items():
        parts.append(text(768, y + 4, name, 12))
    parts += rw(pins.PHYSICAL_PIN[pins.LED_DATA], ring_terms["DIN"], COLOURS["led"], "330 ohm")
    parts += rw(pins.PIN_VBUS, ring_terms["5V"], COLOURS["pwr"], "VBUS 5V")
    parts += rw(gnd[-1], ring_terms["GND"], COLOURS["gnd"])
    # notes
    notes = ["Buttons and encoder contacts close to GND; the Pico's internal pull-ups hold them high.",
             f"Hold {pins.SAFE_MODE_BUTTON.capitalize()} while plugging in: safe mode (plain REPL, panel not started).",
             "Optional: 10 kOhm pull-ups to 3V3 and 10 nF to GND on A and B for long encoder wires."]
    for i, note in enumerate(notes):
        parts.append(text(40, 720 + i * 20, note, 12, colour="#444"))
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def readme_with_table(readme: str, table: str) -> str:
    if BEGIN not in readme or END not in readme:
        raise SystemExit(f"{README} has no {BEGIN} ... {END} markers for the pin table")
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="only check that the picture and the table are current")
    args = ap.parse_args(argv)
    pins = load_pins()
    svg = draw(pins)
    readme = readme_with_table(README.read_text(), pin_table(pins))
    if args.check:
        stale = [str(p.relative_to(ROOT)) for p, want in ((SVG_FILE, svg), (README, readme))
                 if not p.exists() or p.read_text() != want]
        if stale:
            print(f"out of date with firmware/panel/mpanel/pins.py: {', '.join(stale)}; "
                  "run python tools/draw_panel_wiring.py", file=sys.stderr)
            return 1
        print("panel wiring picture and pin table match the firmware's pins")
        return 0
    for path, content in ((SVG_FILE, svg), (README, readme)):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(content)
        tmp.replace(path)  # atomic: never a half-written picture or README
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
