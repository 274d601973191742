"""box.toml: the typed, range-checked schema, its shipped default, and `melisma-device run --config`."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from dataclasses import fields

import pytest
from melisma.device import config as c
from melisma.device.service import main as device_main
from melisma.errors import ConfigError


def test_shipped_default_parses_to_the_defaults():
    cfg = c.parse_config(c.DEFAULT_CONFIG_TEXT)
    assert cfg.unknown == []
    for section, keys in c.SCHEMA.items():
        for key, (default, _rule) in keys.items():
            assert cfg.get(f"{section}.{key}") == default, f"{section}.{key}"
            # the dataclass defaults (used when a section is absent) agree with the schema
            assert getattr(c.BoxConfig(), section).__dataclass_fields__[key].default == default
    assert cfg.audio.sample_rate_hz == 48000 and cfg.audio.frames_per_buffer == 128
    assert {f.name for f in fields(c.BoxConfig)} >= set(c.SCHEMA)
    assert c.parse_config("") == c.BoxConfig(source="box.toml")


@pytest.mark.parametrize("text, words", [
    ('[audio]\nsample_rate_hz = 47000', ["audio.sample_rate_hz = 47000", "44100, 48000", "default 48000"]),
    ('[audio]\nframes_per_buffer = 100', ["audio.frames_per_buffer = 100", "power of two"]),
    ('[audio]\nframes_per_buffer = "128"', ['audio.frames_per_buffer = "128"', "power of two"]),
    ('[audio]\nframes_per_buffer = true', ["audio.frames_per_buffer = true"]),
    ('[ble]\npasskey = "yes"', ['ble.passkey = "yes"', "none, stdout"]),
    ('[ble]\ntransport = "bluetooth0"', ['ble.transport = "bluetooth0"', "hci-socket:0"]),
    ('[ble]\naddress = "00:11:22:33:44:55"', ['ble.address = "00:11:22:33:44:55"', "static random"]),
    ('[panel]\nport = "ttyACM0"', ['panel.port = "ttyACM0"', "/dev/ttyACM0"]),
    ('[storage]\ndata_dir = "relative/dir"', ["storage.data_dir", "absolute path"]),
    ('[storage]\nmax_file_mib = 0', ["storage.max_file_mib = 0", "1 to 128"]),
    ('[log]\nlevel = "loud"', ['log.level = "loud"', "debug, info, warning, error"]),
    ('[update]\nhealth_timeout_s = 1', ["update.health_timeout_s = 1", "5 to 600"]),
    ('audio = 3', ["audio = 3", "is a table"]),
])
def test_bad_values_are_refused_naming_key_value_and_what_works(text, words):
    with pytest.raises(ConfigError) as err:
        c.parse_config(text, name="/etc/melisma/box.toml")
    msg = str(err.value)
    assert msg.startswith("/etc/melisma/box.toml: ")
    for w in words:
        assert w in msg, msg


def test_good_values_and_unknown_keys(caplog):
    cfg = c.parse_config('[ble]\naddress = "f0:12:34:56:78:9a"\ncolour = "red"\n[audio]\nsample_rate_hz = 96000\n'
                         'frames_per_buffer = 64\n[panel]\nport = "/dev/ttyACM0"\n[extras]\nx = 1\n'
                         '[update]\nhealth_timeout_s = 30\n')
    assert cfg.ble.address == "F0:12:34:56:78:9A"
    assert (cfg.audio.sample_rate_hz, cfg.audio.frames_per_buffer, cfg.panel.port) == (96000, 64, "/dev/ttyACM0")
    assert cfg.update.health_timeout_s == 30.0 and isinstance(cfg.update.health_timeout_s, float)
    assert cfg.unknown == ["ble.colour", "extras"]
    assert "unknown key ble.colour" in caplog.text and "unknown key extras" in caplog.text


def test_not_toml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        c.parse_config("[audio\n")
    with pytest.raises(ConfigError, match="does not exist"):
        c.load_config(tmp_path / "nope.toml")


def test_service_refuses_a_bad_config_at_start(tmp_path, capsys):
    bad = tmp_path / "box.toml"
    bad.write_text('[audio]\nsample_rate_hz = 12345\n')
    assert device_main(["run", "--config", str(bad), "--data-dir", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "audio.sample_rate_hz = 12345 is not allowed" in err and "Traceback" not in err
    assert not (tmp_path / "d").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_service_runs_from_config_and_flags_override(tmp_path):
    """A real service on a virtual controller: transport and address from box.toml, data dir from the flag."""
    port, port2 = _free_port(), _free_port()
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
        cfg.write_text(f'[ble]\ntransport = "tcp-client:127.0.0.1:{port}"\naddress = "F0:C0:FF:EE:00:01"\n'
                       f'[storage]\ndata_dir = "{tmp_path / "from-config"}"\n[log]\nlevel = "warning"\n'
                       f'[mystery]\nx = 1\n')
        data = tmp_path / "from-flag"
        box = subprocess.Popen([sys.executable, "-m", "melisma.device.service", "run", "--config", str(cfg),
                                "--data-dir", str(data)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = box.stdout.readline()
        assert "Melisma-0001 ready at F0:C0:FF:EE:00:01" in line and f"tcp-client:127.0.0.1:{port}" in line, line
        beat = json.loads((data / "health.json").read_text())
        assert beat["advertising"] is True and beat["address"] == "F0:C0:FF:EE:00:01" and beat["pid"] == box.pid
        assert not (tmp_path / "from-config").exists()
    finally:
        if box is not None:
            time.sleep(1.0)  # the service installs its SIGTERM handler just after printing "ready"
            box.terminate()
            _, err = box.communicate(timeout=20)
            assert "unknown key mystery" in err
        ctrl.terminate()
        ctrl.wait(timeout=10)
    assert json.loads((data / "health.json").read_text())["advertising"] is False
