"""``melisma-device audio ...`` on real PortAudio streams over a JACK dummy server."""

from __future__ import annotations

import json

import numpy as np
import pytest
from melisma.audio_io import load_audio, write_audio
from melisma.device.audio.calibrate import CalibrationStore
from melisma.device.service import main

SR = 48000


def run_json(capsys, argv):
    rc = main(argv)
    out = capsys.readouterr()
    return rc, (json.loads(out.out) if out.out.strip().startswith("{") else None), out.err


def test_list_json_has_the_jack_device(jack, capsys):
    rc, data, _ = run_json(capsys, ["audio", "list", "--json"])
    assert rc == 0
    jack_devs = [d for d in data["devices"] if d["host_api"].startswith("JACK")]
    assert len(jack_devs) == 1
    d = jack_devs[0]
    assert d["name"] == "system" and d["max_input_channels"] == 2 and d["max_output_channels"] == 2
    assert d["default_sample_rate"] == 48000.0
    assert set(d) >= {"index", "name", "host_api", "max_input_channels", "max_output_channels", "default_sample_rate"}
    assert d["bluetooth"] is False


@pytest.mark.parametrize("block", [64, 128, 256])
def test_calibration_agrees_with_jack_iodelay(jack, loop_later, capsys, tmp_path, block):
    """PortAudio-level round trip = jack_iodelay's graph round trip + PortAudio's buffer (one block)."""
    iodelay = jack.iodelay(1.0)
    _, listed, _ = run_json(capsys, ["audio", "list", "--json"])  # the JACK device's index (ALSA's plugins
    index = next(d["index"] for d in listed["devices"] if d["host_api"].startswith("JACK"))  # may come first)
    loop_later(0.6)  # connected after the test signal has started: it keeps sending until heard
    rc, data, err = run_json(capsys, ["audio", "calibrate", "--input", "system", "--output", str(index), "--block",
                                      str(block), "--rate", "48000", "--data-dir", str(tmp_path), "--json"])
    assert rc == 0, err
    assert data["reliable"] is True and data["warnings"] == []
    assert data["sample_rate"] == SR and data["frames_per_buffer"] == block
    pa_buffer = block  # PortAudio's JACK host: its buffer processor holds one user block (see docs/audio.md)
    assert abs(data["round_trip_frames"] - pa_buffer - iodelay) <= 0.5e-3 * SR
    assert abs(data["round_trip_ms"] - 1000 * data["round_trip_frames"] / SR) < 1e-3
    stored = CalibrationStore(tmp_path).load_all()
    assert list(stored) == [data["stored_as"]] and stored[data["stored_as"]]["round_trip_frames"] == \
        data["round_trip_frames"]


def test_calibration_without_a_loop_says_no_signal(jack, capsys, tmp_path):
    rc, data, err = run_json(capsys, ["audio", "calibrate", "--timeout", "1.5", "--data-dir", str(tmp_path), "--json"])
    assert rc == 11
    assert data["round_trip_ms"] is None and data["reliable"] is False
    assert "no signal" in data["warnings"][0] and "no signal" in err
    assert CalibrationStore(tmp_path).load_all() == {}


def test_impossible_rate_names_what_the_device_supports(jack, capsys, tmp_path):
    rc = main(["audio", "calibrate", "--rate", "44100", "--timeout", "1", "--data-dir", str(tmp_path), "--json"])
    err = capsys.readouterr().err
    assert rc == 11
    assert "44100 Hz" in err and "it supports 48000 Hz" in err and "Traceback" not in err


def test_bad_block_and_unknown_device(jack, capsys, tmp_path):
    assert main(["audio", "calibrate", "--block", "7", "--data-dir", str(tmp_path)]) == 11
    assert "use 16..4096" in capsys.readouterr().err
    assert main(["audio", "calibrate", "--input", "no-such-card", "--data-dir", str(tmp_path)]) == 11
    err = capsys.readouterr().err
    assert "no input device named like 'no-such-card'" in err and "'system'" in err
    assert main(["audio", "calibrate", "--output", "97", "--data-dir", str(tmp_path)]) == 11
    assert "output device #97 does not exist" in capsys.readouterr().err


def _backing_with_markers(path, markers_s, seconds=2.0):
    rng = np.random.default_rng(3)
    y = np.zeros(int(seconds * SR), np.float32)
    for t in markers_s:
        i = round(t * SR)
        y[i:i + 64] += (rng.standard_normal(64) * np.hanning(64)).astype(np.float32) * 0.6
    write_audio(path, np.stack([y, y]), sr=SR)
    return y


def test_record_lines_up_with_the_backing(jack, loop_later, capsys, tmp_path):
    data_dir = tmp_path / "data"
    loop_later(0.5)
    rc, cal, err = run_json(capsys, ["audio", "calibrate", "--data-dir", str(data_dir), "--json"])
    assert rc == 0, err
    markers = [0.3137, 1.2071]
    backing = _backing_with_markers(tmp_path / "backing.wav", markers)
    out = tmp_path / "take.wav"
    # A dropout (xrun) shifts what follows it: on a loaded test machine a take may get one, which
    # the box reports; such a take is recorded again (up to three tries), as a singer would.
    for _attempt in range(3):
        out.unlink(missing_ok=True)
        loop_later(0.0)  # the mic hears the backing through the loop: a known signal at known times
        rc, rec, err = run_json(capsys, ["audio", "record", "--backing", str(tmp_path / "backing.wav"), "--out",
                                         str(out), "--data-dir", str(data_dir), "--seconds", "1.8", "--json"])
        assert rc == 0, err
        if rec["xruns"] == 0:
            break
    assert rec["compensation_frames"] == round(cal["round_trip_frames"]) and isinstance(rec["xruns"], int)
    take, sr = load_audio(out, mono=True)
    assert sr == SR and len(take) == int(1.8 * SR)
    # cross-correlate each marker of the backing with the take: the lag must be ~0
    for t in markers:
        i = round(t * SR)
        ref = backing[i:i + 64]
        seg = take[i - 4800:i + 4800]
        lag = int(np.argmax(np.correlate(seg, ref, mode="valid"))) - 4800
        assert abs(lag) <= 0.001 * SR, f"marker at {t} s is {lag} frames off"
    # never overwrite the take
    rc = main(["audio", "record", "--backing", str(tmp_path / "backing.wav"), "--out", str(out),
               "--data-dir", str(data_dir)])
    assert rc == 3 and "already exists" in capsys.readouterr().err


def test_record_without_calibration_says_how_to_calibrate(jack, capsys, tmp_path):
    _backing_with_markers(tmp_path / "b.wav", [0.2], seconds=0.5)
    rc = main(["audio", "record", "--backing", str(tmp_path / "b.wav"), "--out", str(tmp_path / "t.wav"),
               "--data-dir", str(tmp_path / "empty")])
    err = capsys.readouterr().err
    assert rc == 11 and "no latency calibration" in err and "melisma-device audio calibrate" in err
    assert not (tmp_path / "t.wav").exists()


def test_monitor_json_figures(jack, capsys, tmp_path):
    rc, data, err = run_json(capsys, ["audio", "monitor", "--seconds", "1.5", "--style", "cpop", "--reverb", "0.5",
                                      "--data-dir", str(tmp_path), "--json"])
    assert rc == 0, err
    assert data["callbacks"] > 0.8 * 1.5 * SR / 128
    assert 0 < data["callback_p50_ms"] <= data["callback_p99_ms"] <= data["callback_max_ms"]
    assert isinstance(data["xruns"], int) and data["frames_per_buffer"] == 128
    assert data["latency_source"] == "portaudio_reported" and data["added_latency_ms"] > 0
    assert data["correction"] == 0.0


def test_play_plays_the_whole_file(jack, capsys, tmp_path):
    _backing_with_markers(tmp_path / "mix.wav", [0.1], seconds=0.6)
    rc, data, err = run_json(capsys, ["audio", "play", str(tmp_path / "mix.wav"), "--json"])
    assert rc == 0, err
    assert data["frames"] >= 0.6 * SR and data["played"].endswith("mix.wav")


def test_audio_without_subcommand_prints_help(capsys):
    assert main(["audio"]) == 2
    assert "calibrate" in capsys.readouterr().out



def test_monitor_adds_no_latency_beyond_the_round_trip(jack, loop_later, capsys, tmp_path):
    """The mic goes through the chain in the same callback: what the mic hears is in the output
    one calibrated round trip after it left, and a live slider change swaps the chain."""
    from melisma.device.audio.devices import portaudio
    from melisma.device.audio.monitor import run_monitor

    loop_later(0.5)
    rc, cal, err = run_json(capsys, ["audio", "calibrate", "--data-dir", str(tmp_path), "--json"])
    assert rc == 0, err
    lag = round(cal["round_trip_frames"])
    t0 = int(0.5 * SR)
    y = np.zeros(2 * SR, np.float32)
    y[t0:t0 + 8] = 0.8
    write_audio(tmp_path / "click.wav", np.stack([y, y]), sr=SR, float_wav=True)
    seen = {}

    def started(stream, proc):
        loop_later(0.0)
        seen["proc"], seen["chain"] = proc, proc.chain
        proc.set_settings("western", {"reverb": -1.0})

    with portaudio() as pa:
        res = run_monitor(pa, seconds=1.2, data_dir=tmp_path, style="cpop", backing=tmp_path / "click.wav",
                          vocal_gain=0.5, backing_gain=1.0, tap_frames=SR, on_started=started)
    proc = seen["proc"]
    assert proc.chain is not seen["chain"]  # the slider change reached the running monitor
    tap = np.abs(proc.tap)
    assert int(np.argmax(tap[t0 - 100:t0 + 100])) + t0 - 100 == t0  # the backing's click, as sent
    window = tap[t0 + lag // 2:t0 + lag + lag // 2]
    echo = int(np.argmax(window)) + t0 + lag // 2  # the click, heard by the mic, through the chain
    assert window.max() > 0.05
    assert abs(echo - (t0 + lag)) <= 0.001 * SR, (echo - t0, lag)
    assert res.latency_source == "calibration" and res.added_latency_ms == pytest.approx(cal["round_trip_ms"])
    assert res.processing_lookahead_ms == 0.0


def test_monitor_with_live_correction_prints_its_latency_parts(jack, capsys, tmp_path):
    rc, data, err = run_json(capsys, ["audio", "monitor", "--seconds", "1.0", "--correction", "0.8", "--key", "D zhi",
                                      "--fmin", "100", "--fmax", "800", "--data-dir", str(tmp_path), "--json"])
    assert rc == 0, err
    live = data["live_correction"]
    assert data["correction"] == 0.8 and data["key"] == "D zhi" and live["target_source"] == "key"
    assert live["singer_range_hz"] == [100.0, 800.0]
    assert 0 < data["latency_parts_ms"]["pitch_shifter"] <= live["shifter_max_delay_ms"] <= 20.0
    assert data["added_latency_ms"] == pytest.approx(data["latency_parts_ms"]["portaudio_and_device_buffering"]
                                                     + data["latency_parts_ms"]["pitch_shifter"], abs=2e-3)
    assert "live correction 0.8 toward D zhi" in err


def test_monitor_refuses_a_bad_key_or_amount_plainly(jack, capsys, tmp_path):
    assert main(["audio", "monitor", "--seconds", "0.5", "--correction", "0.5", "--key", "H moll",
                 "--data-dir", str(tmp_path)]) == 11
    err = capsys.readouterr().err
    assert "--key 'H moll'" in err and "chromatic" in err and "Traceback" not in err
    assert main(["audio", "monitor", "--seconds", "0.5", "--correction", "1.5", "--data-dir", str(tmp_path)]) == 11
    assert "out of range; use 0..1" in capsys.readouterr().err
