"""box.toml's [audio] section feeds the box's audio settings (the devices, rate and block size its
audio commands open PortAudio with)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest
from melisma.device import config as c
from melisma.device.audio.devices import AudioSettings


def test_audio_section_becomes_the_audio_settings():
    cfg = c.parse_config('[audio]\ninput = "USB Audio Device"\noutput = "3"\nsample_rate_hz = 96000\n'
                         'frames_per_buffer = 64\n')
    assert c.audio_settings(cfg.audio) == AudioSettings(input="USB Audio Device", output="3", sample_rate=96000,
                                                        frames_per_buffer=64)
    # the shipped default and an absent section both give the box's built-in defaults
    assert c.audio_settings(c.parse_config(c.DEFAULT_CONFIG_TEXT).audio) == AudioSettings()
    assert c.audio_settings(c.parse_config("").audio) == AudioSettings()
    assert c.audio_settings(c.parse_config('[audio]\ninput = "Default"\n').audio).input is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("audio, expected", [
    ('[audio]\ninput = "USB Mic"\nsample_rate_hz = 44100\nframes_per_buffer = 256\n',
     "audio: input USB Mic, output default, 44100 Hz, 256 frames per buffer (from "),
    ("", "audio: input default, output default, 48000 Hz, 128 frames per buffer (from "),
])
def test_service_runs_its_box_with_the_configured_audio(tmp_path, audio, expected):
    """A real service on a virtual controller, started as systemd does (`run --config box.toml`)."""
    port, port2 = _free_port(), _free_port()  # the controllers app wants a link of two
    ctrl = subprocess.Popen([sys.executable, "-m", "bumble.apps.controllers", f"tcp-server:127.0.0.1:{port}",
                             f"tcp-server:127.0.0.1:{port2}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    box = None
    try:
        end = time.monotonic() + 20
        while time.monotonic() < end:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        cfg = tmp_path / "box.toml"
        cfg.write_text(f'[ble]\ntransport = "tcp-client:127.0.0.1:{port}"\naddress = "F0:C0:FF:EE:00:02"\n'
                       f'[storage]\ndata_dir = "{tmp_path / "data"}"\n' + audio)
        box = subprocess.Popen([sys.executable, "-m", "melisma.device.service", "run", "--config", str(cfg)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = box.stdout.readline()
        assert "Melisma-0002 ready" in line, line
    finally:
        err = ""
        if box is not None:
            time.sleep(1.0)  # the service installs its SIGTERM handler just after printing "ready"
            box.terminate()
            _, err = box.communicate(timeout=20)
        ctrl.terminate()
        ctrl.wait(timeout=10)
    assert expected + str(cfg) in err, err
