"""The box side of the panel link on its own: settings, finding the Pico by USB id, the line
protocol against the panel's own implementation, and robustness against a misbehaving peer on a
real pseudo-terminal."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
import tty
from pathlib import Path

import pytest
from bumble.link import LocalLink
from melisma.device import panel_bridge as pb
from melisma.device.ble_server import MelismaBox, local_link_hci
from melisma.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "firmware" / "panel"))

# the panel's own implementation of the line protocol (firmware/panel is not a CPython package)
from mpanel import protocol as panel_protocol  # noqa: E402


@pytest.mark.parametrize("kwargs, words", [
    ({}, "--panel auto"),
    ({"path": "/dev/ttyACM1", "step": 0.9}, "0.01..0.5"),
    ({"path": "/dev/ttyACM1", "heartbeat_s": 2.0, "timeout_s": 1.0}, "longer than"),
    ({"auto_detect": True, "usb_ids": ("2e8a-0005",)}, "vendor:product"),
    ({"path": "/dev/ttyACM1", "mix_extension": ".exe"}, ".m4a"),
])
def test_settings_refuse_bad_values_with_what_would_work(kwargs, words):
    with pytest.raises(ConfigError, match=words.replace(".", r"\.")):
        pb.PanelSettings(**kwargs)


def test_settings_from_the_command_line_option():
    assert pb.PanelSettings.from_option("auto").auto_detect
    assert pb.PanelSettings.from_option("/dev/ttyACM1").path == "/dev/ttyACM1"


def make_tty(sysfs: Path, name: str, vendor: str, product: str, interface: int, device: str) -> None:
    """A sysfs-shaped entry: class/tty/NAME/device -> .../DEVICE/DEVICE:1.N (no USB bus here to read)."""
    usb = sysfs / "devices" / device
    usb.mkdir(parents=True, exist_ok=True)
    (usb / "idVendor").write_text(vendor + "\n")
    (usb / "idProduct").write_text(product + "\n")
    intf = usb / f"{device}:1.{interface}"
    intf.mkdir()
    (intf / "bInterfaceNumber").write_text(f"{interface:02x}\n")
    (sysfs / "class" / "tty" / name).mkdir(parents=True)
    os.symlink(intf, sysfs / "class" / "tty" / name / "device")


def test_find_panel_port_takes_the_picos_data_interface(tmp_path):
    make_tty(tmp_path, "ttyACM0", "2e8a", "0005", 0, "1-1")  # the Pico's REPL
    make_tty(tmp_path, "ttyACM1", "2e8a", "0005", 2, "1-1")  # the Pico's data channel
    make_tty(tmp_path, "ttyACM2", "1a86", "7523", 0, "1-2")  # something else
    found = pb.find_panel_port(sysfs=tmp_path / "class" / "tty", dev="/dev")
    assert found == "/dev/ttyACM1"
    assert pb.find_panel_port(("1a86:7523",), sysfs=tmp_path / "class" / "tty") == "/dev/ttyACM2"
    assert pb.find_panel_port(("dead:beef",), sysfs=tmp_path / "class" / "tty") is None
    assert pb.find_panel_port(sysfs=tmp_path / "missing") is None


LINES = [("hello", ["1.0", "melisma/0.1.0", "name=Melisma-00AA"]), ("turn", ["warmth", "+12"]),
         ("ack", ["65535", "err", "no take on the box: upload one"]), ("err", ["the mix failed: render"]),
         ("ctl", ["cpop", "warmth=25", "reverb=-100"]), ("job", ["running", "mix", "450", "render"]), ("hb", ["0"])]


@pytest.mark.parametrize("verb, args", LINES)
def test_box_and_panel_implementations_agree_on_every_line(verb, args):
    box_line = pb.encode_line(41, verb, args)
    panel_line = panel_protocol.encode_line(41, verb, args)
    assert box_line == panel_line
    assert pb.decode_line(panel_line) == panel_protocol.decode_line(box_line) == (41, verb, args)
    assert pb.PANEL_PROTOCOL == panel_protocol.PROTOCOL
    damaged = box_line.replace(b"41", b"42", 1)
    with pytest.raises(pb.PanelError):
        pb.decode_line(damaged)


def test_bridge_survives_a_misbehaving_panel_and_answers_every_event(tmp_path):
    async def main():
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        path = os.ttyname(slave)
        bridge = pb.PanelBridge(pb.PanelSettings(path=path, reconnect_s=0.1))
        src, sink = local_link_hci(LocalLink(), "F0:00:00:00:00:AB")
        box = MelismaBox(src, sink, data_dir=tmp_path, address="F0:00:00:00:00:AB", engine=object())
        await box.start()
        await bridge.start(box)
        received: list[tuple[int, str, list[str]]] = []
        buffer = b""

        async def pump(seconds):
            nonlocal buffer
            end = asyncio.get_running_loop().time() + seconds
            while asyncio.get_running_loop().time() < end:
                with contextlib.suppress(BlockingIOError):
                    buffer += os.read(master, 4096)
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    received.append(panel_protocol.decode_line(line + b"\n"))
                await asyncio.sleep(0.02)

        def send(seq, verb, args):
            os.write(master, panel_protocol.encode_line(seq, verb, args))

        await pump(0.3)
        assert received and received[0][1] == "hello"  # the box says hello when it opens the port
        os.write(master, b"line noise \xff\x00\n" + b"9 turn warmth +1 *0000\n" + b"x" * 500 + b"\n")
        send(0, "hello", ["1.0", "melisma-panel/0.1.0", "caps=enc,leds12"])
        await pump(0.3)
        assert bridge.alive and bridge.panel_caps == ["enc", "leds12"]
        send(1, "turn", ["warmth", "+4"])
        send(5, "turn", ["loudness", "+1"])  # three lines lost before this one; and no such slider
        send(6, "key", ["mix", "press"])  # no take on the box
        send(7, "frobnicate", [])
        await pump(0.4)
        acks = {int(a[0]): a[1:] for _, verb, a in received if verb == "ack"}
        state = {"warmth": box.controls.sliders["warmth"], "bad": bridge.bad_lines, "lost": bridge.lost_lines,
                 "acks": acks, "verbs": [v for _, v, _ in received]}
        # a panel that speaks another major version is told, and its events are ignored
        send(0, "hello", ["2.0", "melisma-panel/9.0.0"])
        send(1, "turn", ["warmth", "+4"])
        await pump(0.3)
        state["after_v2_warmth"] = box.controls.sliders["warmth"]
        state["err"] = [a for _, v, a in received if v == "err"]
        await bridge.stop()
        await box.stop()
        os.close(master)
        os.close(slave)
        return state

    state = asyncio.run(asyncio.wait_for(main(), 30))
    assert state["warmth"] == 0.2  # four detents of 0.05
    assert state["bad"] >= 3 and state["lost"] == 3
    assert state["acks"][1] == ["ok"]
    assert state["acks"][5] == ["err", "unknown slider"]
    assert state["acks"][6] == ["err", "no take"]
    assert state["acks"][7][0] == "err" and "unknown panel event" in state["acks"][7][1]
    assert {"welcome", "ctl", "job", "pair", "level"} <= set(state["verbs"])
    assert state["after_v2_warmth"] == 0.2
    assert state["err"] and "reflash" in state["err"][-1][0]


DOC = (ROOT / "firmware" / "docs" / "panel.md").read_text()


def test_every_example_line_in_the_doc_decodes_on_both_sides():
    examples = [line.split(None, 3)[3] for line in DOC.splitlines()
                if line.startswith(("box   -> panel", "panel -> box"))]
    assert len(examples) >= 20
    for text in examples:
        raw = text.encode() + b"\n"
        assert pb.decode_line(raw) == panel_protocol.decode_line(raw), text


def test_doc_names_every_simulator_line_and_led_mode():
    from mpanel import state

    for word in ("PTY", "LEDS", "OLED", "LINK up", "LINK down", "SENT", "RECV", "OK", "ERROR", "UNPLUGGED", "BYE"):
        assert f"`{word}" in DOC, word
    for command in ("turn +N", "press NAME", "double NAME", "hold NAME SECONDS", "unplug", "plug", "quit"):
        assert f"`{command}" in DOC, command
    source = (ROOT / "firmware" / "panel" / "mpanel" / "state.py").read_text()
    modes = set(re.findall(r'return "([a-z]+)", ', source))
    assert modes == {"nobox", "passkey", "bonded", "error", "progress", "done", "pairing", "level", "slider"}
    for mode in modes:
        assert f"| `{mode}` |" in DOC, mode
    assert state.LINK_TIMEOUT_MS == 3500 and "3.5 s" in DOC


def test_the_boxs_input_meter_drives_the_panels_level_while_recording_or_monitoring(tmp_path):
    from melisma import protocol as p

    async def main():
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        bridge = pb.PanelBridge(pb.PanelSettings(path=os.ttyname(slave), reconnect_s=0.1))
        src, sink = local_link_hci(LocalLink(), "F0:00:00:00:00:AC")
        box = MelismaBox(src, sink, data_dir=tmp_path, address="F0:00:00:00:00:AC", engine=object())
        await box.start()
        await bridge.start(box)
        await asyncio.sleep(0.3)  # the bridge opens the port and says hello
        subscribed = bridge.on_audio_status in box.audio.listeners
        bridge.on_audio_status(p.AudioStatus(mode=p.AudioMode.MONITORING, input_level_db=-20))
        await asyncio.sleep(0.05)
        bridge.on_audio_status(p.AudioStatus(mode=p.AudioMode.IDLE))
        await asyncio.sleep(0.2)
        data = b""
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(master, 4096):
                data += chunk
        await bridge.stop()
        await box.stop()
        os.close(master)
        os.close(slave)
        lines = [panel_protocol.decode_line(line + b"\n") for line in data.split(b"\n") if line]
        return subscribed, [a for _, verb, a in lines if verb == "level"]

    subscribed, levels = asyncio.run(asyncio.wait_for(main(), 30))
    assert subscribed
    assert ["-200", "mon"] in levels and levels[-1] == ["off"]
