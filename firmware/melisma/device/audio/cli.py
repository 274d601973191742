"""``melisma-device audio ...``: list devices, calibrate, record, monitor, play.

Fixed command lines (checks outside the project drive them)::

    melisma-device audio list --json
    melisma-device audio calibrate [--input DEV] [--output DEV] [--rate HZ] [--block FRAMES] [--timeout S] --json
    melisma-device audio record --backing PATH --out PATH [--seconds S] [--input DEV] [--output DEV]
    melisma-device audio monitor [--seconds S] [--correction 0..1] [--key KEY] --json

(``monitor`` also takes ``--melody PATH.mid``, ``--fmin``/``--fmax`` for the live correction)

plus ``melisma-device audio play PATH``. DEV is a device index or a case-insensitive name substring.
Rate and block size default to 48000 Hz and 128 frames (:class:`.devices.AudioSettings`).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ...errors import AudioDeviceError
from .devices import DEFAULT_FRAMES_PER_BUFFER, DEFAULT_SAMPLE_RATE, AudioSettings, list_devices, portaudio


def _dev(text: str) -> str | int:
    return int(text) if text.strip().isdigit() else text


def _settings_args(sp: argparse.ArgumentParser, *, input: bool = True) -> None:
    if input:
        sp.add_argument("--input", type=_dev, default=None, help="input device: index or name substring (default: "
                                                                  "JACK's, else the system default)")
    sp.add_argument("--output", type=_dev, default=None, help="output device: index or name substring")
    sp.add_argument("--rate", type=int, default=DEFAULT_SAMPLE_RATE, help="sample rate, Hz (default: %(default)s)")
    sp.add_argument("--block", type=int, default=DEFAULT_FRAMES_PER_BUFFER,
                    help="frames per buffer (default: %(default)s)")


def add_audio_parser(sub: Any, *, default_data_dir: str) -> argparse.ArgumentParser:
    """Add the ``audio`` subcommand (and its own subcommands) to the service's subparsers."""
    audio = sub.add_parser("audio", help="the box's own audio: devices, calibration, recording, monitoring, playback")
    asub = audio.add_subparsers(dest="audio_command")
    ls = asub.add_parser("list", help="list the audio devices")
    cal = asub.add_parser("calibrate", help="measure the round-trip latency by loopback and store it")
    _settings_args(cal)
    cal.add_argument("--timeout", type=float, default=10.0,
                     help="keep sending the test signal for up to this many seconds (default: %(default)s)")
    rec = asub.add_parser("record", help="play a backing and record a take lined up with it")
    rec.add_argument("--backing", required=True, help="backing file to play")
    rec.add_argument("--out", required=True, help="take file to write (.wav, .flac, .m4a, ...)")
    rec.add_argument("--seconds", type=float, default=None, help="record only the first S seconds of the backing")
    rec.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    _settings_args(rec)
    mon = asub.add_parser("monitor", help="hear the mic through the vocal chain with the backing (耳返)")
    mon.add_argument("--seconds", type=float, default=10.0, help="how long (default: %(default)s)")
    mon.add_argument("--correction", type=float, default=0.0, help="live pitch correction 0..1 (default: off)")
    mon.add_argument("--key", default=None, help="live correction's key, e.g. 'D major' or 'A yu'; 'chromatic' (the "
                                                 "nearest semitone); default 'auto': the key of the backing")
    mon.add_argument("--melody", default=None, help="a reference melody (MIDI) the live correction follows along "
                                                    "the backing")
    mon.add_argument("--fmin", type=float, default=80.0, help="lowest note the singer sings, Hz (default: %(default)s)")
    mon.add_argument("--fmax", type=float, default=1000.0, help="highest, Hz (default: %(default)s)")
    mon.add_argument("--style", default="neutral", help="vocal chain style (cpop, western, ballad, neutral)")
    mon.add_argument("--backing", default=None, help="a backing to mix in (looped)")
    for name in ("warmth", "reverb", "vocal-level", "air"):
        mon.add_argument(f"--{name}", type=float, default=None, help=f"{name} slider -1..+1")
    _settings_args(mon)
    play = asub.add_parser("play", help="play a mix or preview through the box's output")
    play.add_argument("path")
    play.add_argument("--seconds", type=float, default=None, help="play only the first S seconds")
    _settings_args(play, input=False)
    for sp in (ls, cal, rec, mon, play):
        sp.add_argument("--json", action="store_true", help="print the result as JSON")
        sp.add_argument("--data-dir", default=default_data_dir, help="where calibrations are stored "
                                                                     "(default: %(default)s)")
        sp.add_argument("-v", "--verbose", action="store_true")
    audio.set_defaults(audio_parser=audio)
    return audio


def _settings(args) -> AudioSettings:
    return AudioSettings(input=getattr(args, "input", None), output=args.output, sample_rate=args.rate,
                         frames_per_buffer=args.block)


def _print(args, payload: dict[str, Any], text: str) -> None:
    if args.json:
        print(json.dumps(payload, indent=1, ensure_ascii=False))
    else:
        print(text)


def _warn(warnings: list[str]) -> None:
    for w in warnings:
        print(f"melisma-device: warning: {w}", file=sys.stderr)


def run_audio(args) -> int:
    """Run one ``audio`` subcommand; raises :class:`~melisma.errors.MelismaError` on a user error."""
    cmd = getattr(args, "audio_command", None)
    if cmd is None:
        args.audio_parser.print_help()
        return 2
    if cmd == "list":
        with portaudio() as pa:
            devices = list_devices(pa)
        rows = [d.to_json() for d in devices]
        text = "\n".join(f"{d.index:3d}  {d.name[:40]:40s} {d.host_api[:26]:26s} in {d.max_input_channels:2d}  "
                         f"out {d.max_output_channels:2d}  {d.default_sample_rate:g} Hz"
                         + ("  [bluetooth]" if d.bluetooth else "") for d in devices) or "no audio devices"
        _print(args, {"devices": rows}, text)
        _warn([f"{d.label} is a Bluetooth device ({d.bluetooth_reason}): 150-300 ms of latency, no good for monitoring"
               for d in devices if d.bluetooth])
        return 0
    s = _settings(args)
    if cmd == "calibrate":
        from .calibrate import CalibrationStore, calibrate

        with portaudio() as pa:
            cal = calibrate(pa, input=s.input, output=s.output, sample_rate=s.sample_rate,
                            frames_per_buffer=s.frames_per_buffer, timeout_s=args.timeout)
        payload = cal.to_json()
        if cal.round_trip_frames is not None:
            payload["stored_as"] = CalibrationStore(args.data_dir).save(cal)
        _print(args, payload, f"round trip {payload['round_trip_ms']} ms at {s.sample_rate} Hz / "
                              f"{s.frames_per_buffer} frames ({'reliable' if cal.reliable else 'UNRELIABLE'})")
        _warn(cal.warnings)
        if cal.round_trip_frames is None:
            raise AudioDeviceError("calibration heard nothing; nothing stored")
        return 0
    if cmd == "record":
        from .record import record_take

        with portaudio() as pa:
            res = record_take(pa, backing=args.backing, out=args.out, data_dir=args.data_dir, seconds=args.seconds,
                              input=s.input, output=s.output, sample_rate=s.sample_rate,
                              frames_per_buffer=s.frames_per_buffer, overwrite=args.force)
        _print(args, res.to_json(), f"wrote {res.out}: {res.seconds:.2f} s, compensated by "
                                    f"{res.compensation_ms:.2f} ms, {res.stream.xruns} xrun(s)")
        _warn(res.warnings)
        return 0
    if cmd == "monitor":
        from .monitor import run_monitor

        sliders = {k: v for k, v in (("warmth", args.warmth), ("reverb", args.reverb),
                                     ("vocal_level", args.vocal_level), ("air", args.air)) if v is not None}
        with portaudio() as pa:
            mres = run_monitor(pa, seconds=args.seconds, data_dir=args.data_dir, input=s.input, output=s.output,
                              sample_rate=s.sample_rate, frames_per_buffer=s.frames_per_buffer, style=args.style,
                              sliders=sliders, backing=args.backing, correction=args.correction, key=args.key,
                              melody=args.melody, singer_range_hz=(args.fmin, args.fmax))
        p = mres.to_json()
        if p["live_correction"]:
            lc = p["live_correction"]
            print(f"live correction {args.correction:g} toward {lc['target']} ({lc['target_source']}): pitch shifter "
                  f"{lc['shifter_mean_delay_ms']} ms on average, at most {lc['shifter_max_delay_ms']} ms",
                  file=sys.stderr if args.json else sys.stdout)
        _print(args, p, f"added latency {p['added_latency_ms']} ms ({p['latency_source']}); callback p50 "
                        f"{p['callback_p50_ms']} ms, p99 {p['callback_p99_ms']} ms of {p['block_period_ms']} ms; "
                        f"{p['xruns']} xrun(s)")
        _warn(mres.warnings)
        return 0
    if cmd == "play":
        from .record import play_file

        with portaudio() as pa:
            fig = play_file(pa, args.path, output=s.output, sample_rate=s.sample_rate,
                            frames_per_buffer=s.frames_per_buffer, seconds=args.seconds)
        _print(args, {"played": args.path, **fig.to_json()},
               f"played {args.path} ({fig.frames / fig.sample_rate:.2f} s, {fig.xruns} xrun(s))")
        return 0
    raise AudioDeviceError(f"unknown audio command {cmd!r}; use list, calibrate, record, monitor or play")
