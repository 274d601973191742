"""Bluetooth sinks told by what the system says: a real PulseAudio server whose default sink
carries ``device.bus=bluetooth`` (as BlueZ sinks do), seen through PortAudio's ALSA ``pulse``
device; ALSA's card bus in sysfs; the name as the fallback."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest
from melisma.device.audio.devices import BluetoothProbe, list_devices, parse_pactl_sinks, portaudio


@pytest.fixture
def pulse(tmp_path, monkeypatch):
    if shutil.which("pulseaudio") is None or shutil.which("pactl") is None:
        pytest.skip("pulseaudio / pactl are not installed (tools/run installs them)")
    sock = tmp_path / "native"
    env = {**os.environ, "HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path)}
    proc = subprocess.Popen(
        ["pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--use-pid-file=no", "-F", "/dev/null",
         f"--load=module-native-protocol-unix socket={sock} auth-anonymous=1",
         "--load=module-null-sink sink_name=bt_headphones sink_properties='device.bus=bluetooth device.api=bluez5'",
         "--load=module-null-sink sink_name=wired sink_properties='device.bus=pci'"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = f"unix:{sock}"
    monkeypatch.setenv("PULSE_SERVER", server)
    for _ in range(100):
        if subprocess.run(["pactl", "info"], capture_output=True, env={**os.environ, "PULSE_SERVER": server}).returncode == 0:
            break
        time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("pulseaudio did not start")

    def default(sink: str) -> None:
        subprocess.run(["pactl", "set-default-sink", sink], check=True, env={**os.environ, "PULSE_SERVER": server})

    yield default
    proc.terminate()
    proc.wait(10)


def test_the_sound_servers_bluetooth_default_sink_flags_portaudios_pulse_device(pulse):
    pulse("bt_headphones")
    with portaudio() as pa:
        devices = {d.name: d for d in list_devices(pa)}
    if "pulse" not in devices:
        pytest.skip("PortAudio's ALSA has no 'pulse' device (libasound2-plugins is missing)")
    d = devices["pulse"]
    assert d.bluetooth and "bt_headphones" in d.bluetooth_reason and "device.bus=bluetooth" in d.bluetooth_reason
    pulse("wired")
    with portaudio() as pa:
        devices = {d.name: d for d in list_devices(pa)}
    assert devices["pulse"].bluetooth is False and devices["pulse"].bluetooth_reason == ""


def test_pactl_properties_and_sink_names(pulse):
    pulse("wired")
    probe = BluetoothProbe()
    assert probe.reason("pulse") == ""
    assert "sink 'bt_headphones'" in probe.reason("bt_headphones")  # a device named after the sink


def test_alsa_card_on_a_bluetooth_bus_and_the_name_fallback(tmp_path):
    card = tmp_path / "devices" / "platform" / "bluetooth" / "hci0" / "card1"
    card.mkdir(parents=True)
    snd = tmp_path / "class" / "sound" / "card1"
    snd.mkdir(parents=True)
    (snd / "device").symlink_to(card)
    usb = tmp_path / "devices" / "pci0000:00" / "usb1" / "card2"
    usb.mkdir(parents=True)
    (tmp_path / "class" / "sound" / "card2").mkdir()
    (tmp_path / "class" / "sound" / "card2" / "device").symlink_to(usb)
    probe = BluetoothProbe(run=lambda args: None, sysfs=str(tmp_path))
    assert probe.reason("Headset: USB Audio (hw:1,0)") == "ALSA card 1 is on a Bluetooth bus"
    assert probe.reason("USB Audio: - (hw:2,0)") == ""
    assert probe.reason("bluez_output.AC_12_2F.1") == "named like a Bluetooth device"
    assert probe.reason("system") == ""


def test_parse_pactl_sinks_keeps_each_sinks_properties():
    text = ("Sink #0\n\tName: a\n\tProperties:\n\t\tdevice.bus = \"pci\"\n"
            "Sink #1\n\tName: b\n\tProperties:\n\t\tdevice.api = \"bluez5\"\n\t\tdevice.description = \"Buds\"\n")
    assert parse_pactl_sinks(text) == {"a": {"device.bus": "pci"}, "b": {"device.api": "bluez5", "device.description": "Buds"}}
