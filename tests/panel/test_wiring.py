"""One source of truth for the pins: the picture and the table in hardware/ come from mpanel/pins.py."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "draw_panel_wiring.py"


def load_script():
    spec = importlib.util.spec_from_file_location("draw_panel_wiring", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_picture_and_table_match_the_firmware_pins():
    result = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_every_pin_the_firmware_uses_is_in_the_table_and_the_picture():
    draw = load_script()
    pins = draw.load_pins()
    readme = (ROOT / "hardware" / "README.md").read_text()
    svg = (ROOT / "hardware" / "panel-wiring.svg").read_text()
    for signal, gpio, physical, _ in pins.wiring():
        assert f"| {signal} | GP{gpio} | {physical} |" in readme
        assert re.search(rf">{physical} GP{gpio}<|>GP{gpio} {physical}<", svg), (signal, gpio, physical)


def test_a_moved_pin_makes_the_check_fail():
    draw = load_script()
    pins = draw.load_pins()
    moved = types.SimpleNamespace(**{k: getattr(pins, k) for k in dir(pins) if not k.startswith("__")})
    moved.ENCODER_A = 5
    moved.wiring = types.FunctionType(pins.wiring.__code__, vars(moved))
    assert draw.draw(moved) != (ROOT / "hardware" / "panel-wiring.svg").read_text()
    assert draw.pin_table(moved) != draw.pin_table(pins)


def test_the_hardware_layer_takes_its_pins_from_pins_py():
    source = (ROOT / "firmware" / "panel" / "mpanel" / "hw_pico.py").read_text()
    assert not re.search(r"Pin\(\s*\d", source), "a GPIO number is written into hw_pico.py instead of pins.py"
    for name in ("ENCODER_A", "ENCODER_B", "BUTTONS", "LED_DATA", "I2C_SDA", "I2C_SCL"):
        assert f"pins.{name}" in source
