"""The front panel's wiring: the one source of truth for which Pico pin does what.

The hardware layer (``hw_pico``) takes its pin numbers from here, ``tools/draw_panel_wiring.py``
draws hardware/panel-wiring.svg and writes the pin table in hardware/README.md from here, and a
test fails when the picture or the table no longer match this file.

Buttons and encoder contacts close to ground; the Pico's internal pull-ups hold them high.
"""

#: Encoder contact A (often marked CLK) and B (DT), GPIO numbers.
ENCODER_A = 2
ENCODER_B = 3
#: Buttons by name: the encoder's own push switch is ``knob``.
BUTTONS = (("knob", 4), ("mix", 6), ("pair", 7), ("mode", 8))
#: WS2812 data in (through a 330 ohm resistor), and how many LEDs the ring has.
LED_DATA = 16
LED_COUNT = 12
#: SSD1306 128x64 OLED on I2C0.
I2C_ID = 0
I2C_SDA = 0
I2C_SCL = 1
OLED_ADDRESS = 0x3C
OLED_WIDTH = 128
OLED_HEIGHT = 64
#: The button held at power-on that keeps the panel code from starting (safe mode: plain REPL).
SAFE_MODE_BUTTON = "mode"

#: Physical pin of each GPIO on the Pico's 40-pin header (GND pins: 3 8 13 18 23 28 33 38).
PHYSICAL_PIN = {0: 1, 1: 2, 2: 4, 3: 5, 4: 6, 5: 7, 6: 9, 7: 10, 8: 11, 9: 12, 10: 14, 11: 15, 12: 16, 13: 17,
                14: 19, 15: 20, 16: 21, 17: 22, 18: 24, 19: 25, 20: 26, 21: 27, 22: 29, 26: 31, 27: 32, 28: 34}
#: Power pins used by the wiring.
PIN_3V3 = 36
PIN_VBUS = 40
GROUND_PINS = (3, 8, 13, 18, 23, 28, 33, 38)


def wiring() -> list[tuple[str, int, int, str]]:
    """Rows ``(signal, gpio, physical pin, where it goes)`` for the table and the picture."""
    rows = [
        ("encoder A (CLK)", ENCODER_A, PHYSICAL_PIN[ENCODER_A], "EC11 pin A; encoder pin C to GND"),
        ("encoder B (DT)", ENCODER_B, PHYSICAL_PIN[ENCODER_B], "EC11 pin B"),
    ]
    for name, gpio in BUTTONS:
        where = "EC11 push switch, other leg to GND" if name == "knob" else name.capitalize() + " button to GND"
        rows.append(("button " + name, gpio, PHYSICAL_PIN[gpio], where))
    rows.append(("LED data", LED_DATA, PHYSICAL_PIN[LED_DATA], "WS2812 DIN through 330 ohm (ring 5V from VBUS)"))
    rows.append(("I2C0 SDA", I2C_SDA, PHYSICAL_PIN[I2C_SDA], "SSD1306 SDA"))
    rows.append(("I2C0 SCL", I2C_SCL, PHYSICAL_PIN[I2C_SCL], "SSD1306 SCL"))
    return rows
