"""Benchmark the live monitor (耳返) on real PortAudio streams over a JACK dummy server.

For 48 kHz and 64/128/256-frame blocks, with and without live correction, it prints: callback
time p50/p99/max against the block period, the share of one core the callback uses, xruns over the
run, and the added mic-to-ear latency (the calibrated round trip for those settings + the
processing's lookahead, 0, + the live corrector's pitch-shifter delay when it runs). The mic hears a synthetic sung line (harmonics, 5.5 Hz vibrato, noise
bursts for the esses) played as the backing and looped back in the JACK graph, so the chain
works on signal, not silence (vocal gain 0.3 keeps the feedback loop stable).

    .venv/bin/python tools/bench_audio.py                 # 60 s per configuration
    .venv/bin/python tools/bench_audio.py --seconds 10    # a quick run
    .venv/bin/python tools/bench_audio.py --json out.json
    .venv/bin/python tools/bench_audio.py --ab 2 --blocks 128 --seconds 20 --stages

``--ab N`` runs, per block size and correction, N rounds of: the native peer (``jack_thru``, a
C client: the server's and the machine's own xruns), the Python peer (a passthrough callback:
what PyAudio and the GIL cost with no processing), then the monitor on its reference path
(the engine's stages called as they are, as before the real-time path) and on its real-time
path (:mod:`melisma.device.audio.rt_chain`), interleaved so that load from other processes hits
both alike. Each row also gives jackd's own count of xruns by cause (``driver``: the dummy
driver's timer woke late; ``client``: a client had not finished its cycle), the callback's CPU
time (its thread's clock) beside its wall time, and the load average. ``--stages`` times every
part of the block inside the callback (µs, p50/p99/max).

Needs jackd (Debian's jackd2) and PyAudio (the box-audio extra).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from melisma.audio_io import write_audio
from melisma.device.audio.calibrate import CalibrationStore, calibrate
from melisma.device.audio.devices import portaudio
from melisma.device.audio.monitor import PassthroughProcessor, run_monitor
from melisma.device.audio.stream import AudioStream

from tools.jack_dummy import JackDummy

SR = 48000


def sung_line(seconds: float = 8.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    notes = 220.0 * 2 ** (np.array([0, 2, 4, 5, 7, 5, 4, 2]) / 12)
    f0 = np.repeat(notes, int(np.ceil(len(t) / len(notes))))[:len(t)] * 2 ** (0.5 / 12 * np.sin(2 * np.pi * 5.5 * t))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    y = sum(np.sin(k * phase) / k for k in range(1, 12))
    rng = np.random.default_rng(0)
    ess = (rng.standard_normal(len(t)) * ((t % 1.0) < 0.08)) * 0.3
    y = y / np.max(np.abs(y)) * 0.25 + ess * 0.25
    return y.astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0, help="per configuration (default: %(default)s)")
    ap.add_argument("--blocks", default="64,128,256")
    ap.add_argument("--jack-period", type=int, default=256, help="the JACK dummy server's period (frames)")
    ap.add_argument("--no-realtime", action="store_true",
                    help="run jackd without realtime scheduling (as the tests do); default: -R, as on the box")
    ap.add_argument("--no-correction-runs", action="store_true", help="skip the live-correction runs")
    ap.add_argument("--key", default="A major")
    ap.add_argument("--json", default=None, help="also write the rows to this file")
    ap.add_argument("--ab", type=int, default=0, metavar="N",
                    help="N interleaved rounds of peers + reference path + real-time path per configuration")
    ap.add_argument("--stages", action="store_true", help="time each part of the block inside the callback")
    args = ap.parse_args(argv)
    if args.ab:
        return _ab(args)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, JackDummy(rate=SR, period=args.jack_period,
                                                          realtime=not args.no_realtime) as jack:
        backing = Path(tmp) / "line.wav"
        write_audio(backing, sung_line(), sr=SR)
        iodelay = jack.iodelay(1.0)
        rt = "no realtime" if args.no_realtime else "realtime"
        print(f"JACK dummy server ({rt}): {SR} Hz, period {args.jack_period}; jack_iodelay {iodelay:.0f} frames "
              f"({1000 * iodelay / SR:.2f} ms)")
        try:
            from melisma.device.audio import live_correct  # noqa: F401
            corrections = [0.0] if args.no_correction_runs else [0.0, 0.8]
        except ImportError:
            corrections = [0.0]
            print("live correction: not available in this build; only the plain monitor is measured")
        for block in [int(b) for b in args.blocks.split(",")]:
            with portaudio() as pa:
                threading.Timer(0.3, jack.loop_portaudio).start()
                cal = calibrate(pa, frames_per_buffer=block, timeout_s=10)
            CalibrationStore(tmp).save(cal)
            for corr in corrections:
                with portaudio() as pa:
                    threading.Timer(0.0, jack.loop_portaudio).start()
                    res = run_monitor(pa, seconds=args.seconds, data_dir=tmp, frames_per_buffer=block, style="cpop",
                                      backing=backing, correction=corr, key=args.key if corr else None,
                                      vocal_gain=0.3)
                s = res.stream
                row = {"block": block, "correction": corr, "block_period_ms": round(s.block_period_ms, 3),
                       "callback_p50_ms": round(s.callback_p50_ms, 3), "callback_p99_ms": round(s.callback_p99_ms, 3),
                       "callback_max_ms": round(s.callback_max_ms, 3), "core_share": round(s.core_share, 4),
                       "process_cpu_share": round(s.process_cpu_share, 4), "xruns": s.xruns,
                       "seconds": round(s.wall_s, 1), "added_latency_ms": round(res.added_latency_ms, 2),
                       "buffering_ms": round(res.buffering_ms, 2),
                       "lookahead_ms": round(res.processing_lookahead_ms, 2), "latency_source": res.latency_source,
                       "shifter_ms": round(res.pitch_shifter_ms, 2),
                       "shifter_max_ms": (res.live_correction or {}).get("shifter_max_delay_ms", 0.0)}
                rows.append(row)
                print(f"block {block:4d} ({row['block_period_ms']:.2f} ms)  correction {corr:.1f}: callback p50 "
                      f"{row['callback_p50_ms']:.3f} ms  p99 {row['callback_p99_ms']:.3f} ms  max "
                      f"{row['callback_max_ms']:.2f} ms  core {100 * row['core_share']:.1f} %  (process "
                      f"{100 * row['process_cpu_share']:.1f} %)  xruns {row['xruns']} in {row['seconds']} s  "
                      f"added latency {row['added_latency_ms']:.2f} ms (buffers {row['buffering_ms']:.2f} + "
                      f"lookahead {row['lookahead_ms']:.2f} + shifter {row['shifter_ms']:.2f}, at most "
                      f"{row['shifter_max_ms']:.2f})", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


def _load() -> str:
    return "/".join(f"{v:.2f}" for v in os.getloadavg())


def _cpu_ticks() -> tuple[int, int]:
    """(steal, total) jiffies of all CPUs from /proc/stat (steal: time a VM's CPUs were not running)."""
    try:
        with open("/proc/stat") as f:
            v = [int(a) for a in f.readline().split()[1:]]
    except OSError:
        return 0, 0
    return (v[7] if len(v) > 7 else 0), sum(v)


class _Steal:
    def __enter__(self):
        self.t0 = _cpu_ticks()
        return self

    def __exit__(self, *exc):
        t1 = _cpu_ticks()
        total = t1[1] - self.t0[1]
        self.share = (t1[0] - self.t0[0]) / total if total > 0 else 0.0


def _print_row(row: dict) -> None:
    what = row["what"]
    line = (f"block {row['block']:4d} corr {row['correction']:.1f} {what:10s} load {row['load']:>14s}  "
            f"steal {100 * row['steal']:.1f} %  xruns {row['xruns']:3d} (jackd: driver {row['jack_driver_xruns']}, "
            f"client {row['jack_client_xruns']})")
    if "callback_p50_ms" in row:
        line += (f"  cb p50/p99/max {row['callback_p50_ms']:.3f}/{row['callback_p99_ms']:.3f}/{row['callback_max_ms']:.2f} ms"
                 f" of {row['block_period_ms']:.2f}  cpu p99/max {row['callback_cpu_p99_ms']:.3f}/"
                 f"{row['callback_cpu_max_ms']:.2f}  late {row['late_callbacks']}  start-delay p99/max "
                 f"{row['start_delay_p99_ms']:.2f}/{row['start_delay_max_ms']:.2f}  core {100 * row['core_share']:.1f} %"
                 f"  gc {row['gc_collections']}  page faults {row['minor_page_faults']}/{row['major_page_faults']}")
    if "added_latency_ms" in row:
        line += f"  latency {row['added_latency_ms']:.2f} ms"
    print(line, flush=True)
    for name, c in (row.get("stage_costs_us") or {}).items():
        print(f"      {name:18s} p50 {c['p50']:7.1f} us  p99 {c['p99']:7.1f}  max {c['max']:8.1f}", flush=True)


def _stream_row(figures) -> dict:
    f = figures
    return {"block_period_ms": f.block_period_ms, "callback_p50_ms": f.callback_p50_ms, "callback_p99_ms": f.callback_p99_ms,
            "callback_max_ms": f.callback_max_ms, "callback_cpu_p99_ms": f.callback_cpu_p99_ms,
            "callback_cpu_max_ms": f.callback_cpu_max_ms, "late_callbacks": f.late_callbacks,
            "start_delay_p99_ms": f.start_delay_p99_ms, "start_delay_max_ms": f.start_delay_max_ms,
            "core_share": f.core_share, "process_cpu_share": f.process_cpu_share, "xruns": f.xruns,
            "gc_collections": f.gc_collections, "minor_page_faults": f.minor_page_faults,
            "major_page_faults": f.major_page_faults, "seconds": f.wall_s}


def _ab(args) -> int:
    """Peers and both monitor paths, interleaved (see the module docstring)."""
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp, JackDummy(rate=SR, period=args.jack_period,
                                                          realtime=not args.no_realtime) as jack:
        backing = Path(tmp) / "line.wav"
        write_audio(backing, sung_line(), sr=SR)
        rt = "no realtime" if args.no_realtime else "realtime"
        print(f"JACK dummy server ({rt}): {SR} Hz, period {args.jack_period}; {os.cpu_count()} CPUs; "
              f"{args.seconds:g} s per run", flush=True)
        corrections = [0.0] if args.no_correction_runs else [0.0, 0.8]
        for block in [int(b) for b in args.blocks.split(",")]:
            with portaudio() as pa:
                threading.Timer(0.3, jack.loop_portaudio).start()
                cal = calibrate(pa, frames_per_buffer=block, timeout_s=10)
            CalibrationStore(tmp).save(cal)
            for corr in corrections:
                for _round in range(args.ab):
                    base = {"block": block, "correction": corr}
                    load = _load()
                    with _Steal() as st:
                        peer = jack.native_passthrough(args.seconds)
                    row = {**base, "what": "native", "load": load, "steal": st.share, "xruns": peer["driver"] + peer["client"],
                           "jack_driver_xruns": peer["driver"], "jack_client_xruns": peer["client"]}
                    rows.append(row)
                    _print_row(row)
                    load, before = _load(), jack.xrun_counts()
                    with _Steal() as st, portaudio() as pa:
                        stream = AudioStream(pa, PassthroughProcessor(), frames_per_buffer=block)
                        stream.start()
                        try:
                            stream.wait(args.seconds)
                        finally:
                            figures = stream.stop()
                    after = jack.xrun_counts()
                    row = {**base, "what": "passthru", "load": load, "steal": st.share, **_stream_row(figures),
                           "jack_driver_xruns": after["driver"] - before["driver"],
                           "jack_client_xruns": after["client"] - before["client"]}
                    rows.append(row)
                    _print_row(row)
                    for fast in (False, True):
                        load, before = _load(), jack.xrun_counts()
                        with _Steal() as st, portaudio() as pa:
                            threading.Timer(0.0, jack.loop_portaudio).start()
                            res = run_monitor(pa, seconds=args.seconds, data_dir=tmp, frames_per_buffer=block,
                                              style="cpop", backing=backing, correction=corr,
                                              key=args.key if corr else None, vocal_gain=0.3, fast=fast,
                                              instrument=args.stages)
                        after = jack.xrun_counts()
                        row = {**base, "what": "realtime" if fast else "reference", "load": load, "steal": st.share,
                               **_stream_row(res.stream), "added_latency_ms": res.added_latency_ms,
                               "jack_driver_xruns": after["driver"] - before["driver"],
                               "jack_client_xruns": after["client"] - before["client"],
                               "stage_costs_us": res.stage_costs_us}
                        rows.append(row)
                        _print_row(row)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
