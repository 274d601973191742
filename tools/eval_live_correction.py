#!/usr/bin/env python3
"""Measure the monitor's live correction (and x42-fat1's) on generated and real singing.

Every signal goes block by block (128 frames at 48 kHz unless told) through
:meth:`melisma.device.audio.live_correct.LiveCorrector.process`, the call the monitor's audio
callback makes; the peer, x42-autotune (fat1, Debian's x42-plugins), runs through the same
blocks in a ctypes LV2 host (tools/lv2_host.py). The output's pitch is then tracked offline
with the engine's DSP tracker (pYIN, a different tracker from the live one) and compared with
the truth:

- **added latency**: the corrector's shifter delay (mean and bound), checked by
  cross-correlating output with input; fat1's is its reported latency port;
- **note-centre error**: per note, the mean pitch over the note's interior (from 300 ms in,
  after the centre settles, to 50 ms before its end) against the target note (generated: the
  note it aimed at; real: the nearest note of the key / semitone of the annotated note);
- **vibrato extent kept**: the RMS of the pitch around its 200 ms running mean over a vibrato
  note's interior, output over input (100 %: untouched);
- **slide kept**: the 10-90 % time of a slide, output over input.

Usage::

    tools/eval_live_correction.py [--json] [--block 128] [--real N] [--no-peer]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "firmware"))
sys.path.insert(0, str(ROOT))

from melisma.analysis.key import parse_key  # noqa: E402
from melisma.analysis.pitch import DspPitchTracker, track_pitch  # noqa: E402
from melisma.device.audio.live_correct import LiveCorrector, LiveTarget  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
if not DATA.exists():
    DATA = Path("/work/shared/data")


def run_blocks(proc, x: np.ndarray, block: int) -> np.ndarray:
    """``proc(block) -> block`` over ``x`` (zero-padded to whole blocks), concatenated."""
    n = int(math.ceil(len(x) / block)) * block
    xp = np.zeros(n, np.float32)
    xp[:len(x)] = x
    out = np.empty(n, np.float32)
    for i in range(0, n, block):
        out[i:i + block] = proc(xp[i:i + block])
    return out[:len(x)]


def run_corrector(x: np.ndarray, *, sr: int, block: int, amount: float, target: LiveTarget,
                  fmin_hz: float = 80.0, fmax_hz: float = 1000.0) -> tuple[np.ndarray, LiveCorrector]:
    """The live corrector over ``x`` block by block."""
    c = LiveCorrector(amount, target, fmin_hz=fmin_hz, fmax_hz=fmax_hz)
    c.prepare(sample_rate=sr, frames_per_buffer=block)
    return run_blocks(c.process, x, block), c


def cents_track(y: np.ndarray, sr: int, delay_s: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(times_s, cents re MIDI 0, NaN unvoiced) of ``y`` by the engine's pYIN, shifted back by ``delay_s``."""
    tr = track_pitch(y, sr=sr, tracker=DspPitchTracker())
    hz = tr.hz.astype(np.float64)
    c = np.where(hz > 0, 1200 * np.log2(np.maximum(hz, 1e-9) / 440.0) + 6900.0, np.nan)
    return tr.times_s - delay_s, c


def _interior(t, c, a, b):
    m = (t >= a) & (t < b) & np.isfinite(c)
    return c[m]


def _vibrato_rms(t, c, a, b, hop):
    seg = _interior(t, c, a, b)
    k = max(3, round(0.2 / hop))
    if len(seg) < k + 10:
        return float("nan")
    ker = np.ones(k) / k
    smooth = np.convolve(seg, ker, mode="valid")
    resid = seg[k // 2:k // 2 + len(smooth)] - smooth
    return float(np.sqrt(np.mean(resid ** 2)))


def _slide_time(t, c, a, b, lo, hi):
    seg_t, seg = t[(t >= a) & (t < b)], c[(t >= a) & (t < b)]
    ok = np.isfinite(seg)
    seg_t, seg = seg_t[ok], seg[ok]
    if len(seg) < 5 or abs(hi - lo) < 50:
        return float("nan")
    frac = (seg - lo) / (hi - lo)
    i10 = np.flatnonzero(frac >= 0.1)
    i90 = np.flatnonzero(frac >= 0.9)
    if not len(i10) or not len(i90):
        return float("nan")
    return float(seg_t[i90[0]] - seg_t[i10[0]])


def generated_metrics(line, y: np.ndarray, delay_s: float) -> dict:
    """Note-centre error, vibrato kept and slide time kept on a :func:`tools.sung_line.sung_line`."""
    tin, cin = cents_track(line.audio, line.sr)
    tout, cout = cents_track(y, line.sr, delay_s)
    hop = float(tin[1] - tin[0])
    err_in, err_out, vib, slide = [], [], [], []
    for j, n in enumerate(line.notes):
        a, b = n.start_s + 0.3, n.end_s - 0.05
        ci, co = _interior(tin, cin, a, b), _interior(tout, cout, a, b)
        if len(ci) < 10 or len(co) < 10:
            continue
        tgt = 100.0 * n.target_midi
        err_in.append(abs(float(np.mean(ci)) - tgt))
        err_out.append(abs(float(np.mean(co)) - tgt))
        if n.vibrato_cents:
            vi, vo = _vibrato_rms(tin, cin, a, b, hop), _vibrato_rms(tout, cout, a, b, hop)
            if np.isfinite(vi) and np.isfinite(vo) and vi > 0:
                vib.append(vo / vi)
        if n.slide_in_s and j > 0:
            p = line.notes[j - 1]
            lo_i, hi_i = 100 * p.centre_midi, 100 * n.centre_midi
            si = _slide_time(tin, cin, n.start_s - 0.05, n.start_s + n.slide_in_s + 0.15, lo_i, hi_i)
            pre = _interior(tout, cout, p.end_s - 0.2, p.end_s - 0.02)
            post = _interior(tout, cout, n.start_s + n.slide_in_s + 0.05, n.start_s + n.slide_in_s + 0.2)
            if len(pre) and len(post):
                so = _slide_time(tout, cout, n.start_s - 0.05, n.start_s + n.slide_in_s + 0.15,
                                 float(np.mean(pre)), float(np.mean(post)))
                if np.isfinite(si) and np.isfinite(so) and si > 0:
                    slide.append(so / si)
    return _summary(err_in, err_out, vib, slide)


def _summary(err_in, err_out, vib, slide) -> dict:
    def med(v):
        return round(float(np.median(v)), 1) if len(v) else None

    return {"notes": len(err_in), "centre_error_in_cents": med(err_in), "centre_error_out_cents": med(err_out),
            "centre_error_out_p90_cents": round(float(np.percentile(err_out, 90)), 1) if err_out else None,
            "vibrato_kept_pct": None if not vib else round(100 * float(np.median(vib)), 1),
            "vibrato_notes": len(vib),
            "slide_time_kept_pct": None if not slide else round(100 * float(np.median(slide)), 1),
            "slides": len(slide)}


def measured_delay_s(x: np.ndarray, y: np.ndarray, sr: int, max_s: float = 0.05) -> float:
    """Lag of ``y`` behind ``x`` by cross-correlation (s), searched up to ``max_s``."""
    from scipy import signal

    n = min(len(x), len(y), 4 * sr)
    cc = signal.correlate(y[:n], x[:n], mode="full", method="fft")[n - 1:n - 1 + int(max_s * sr)]
    return float(np.argmax(cc)) / sr


# ---------------------------------------------------------------------------------------------
# real singing


def _load(path: Path, sr: int) -> np.ndarray:
    from melisma.audio_io import load_audio

    y, _ = load_audio(path, sr=sr)
    return y.mean(axis=0).astype(np.float32) if y.ndim == 2 else y.astype(np.float32)


def real_items(limit: int) -> list[tuple[str, Path, list[tuple[float, float, float]], float]]:
    """(name, audio, notes (onset_s, offset_s, midi), annotation offset in cents) of real singing."""
    items = []
    voc = DATA / "vocadito"
    wav = voc / "Audio" / "vocadito_1.wav"
    note_files = sorted((voc / "Annotations" / "Notes").glob("vocadito_1_*"))
    if wav.exists() and note_files:
        notes = []
        for line in note_files[0].read_text().splitlines():
            parts = [p for p in line.replace(",", " ").split() if p]
            try:
                on, hz, dur = (float(v) for v in parts[:3])
            except ValueError:
                continue
            if hz > 0:
                notes.append((on, on + dur, 69 + 12 * math.log2(hz / 440.0)))
        items.append(("vocadito_1", wav, notes, 0.0))
    for txt in sorted((DATA / "ssvd_v2_subset" / "test").glob("*.txt"))[:max(0, limit - len(items))]:
        notes = []
        for line in txt.read_text().splitlines():
            parts = line.split()
            try:
                notes.append((float(parts[0]), float(parts[1]), float(parts[2])))
            except (ValueError, IndexError):
                continue
        flac = txt.with_suffix(".flac")
        if flac.exists() and notes:
            items.append((f"ssvd {txt.stem}", flac, notes, 0.0))
    return items[:limit]


def real_metrics(x, y, sr, notes, delay_s, target: LiveTarget) -> dict:
    """Note-centre error (to the target nearest each note's sung centre) and vibrato kept, on real singing."""
    tin, cin = cents_track(x, sr)
    tout, cout = cents_track(y, sr, delay_s)
    hop = float(tin[1] - tin[0])
    err_in, err_out, vib = [], [], []
    for on, off, _midi in notes:
        if off - on < 0.45:
            continue
        a, b = on + 0.3, off - 0.05
        ci, co = _interior(tin, cin, a, b), _interior(tout, cout, a, b)
        if len(ci) < 10 or len(co) < 10:
            continue
        sung = float(np.mean(ci))
        tgt = 100.0 * target.candidates(sung / 100.0, on)[0]
        err_in.append(abs(sung - tgt))
        err_out.append(abs(float(np.mean(co)) - tgt))
        vi, vo = _vibrato_rms(tin, cin, a, b, hop), _vibrato_rms(tout, cout, a, b, hop)
        if np.isfinite(vi) and np.isfinite(vo) and vi > 3.0:  # a note with some movement on it
            vib.append(vo / vi)
    return _summary(err_in, err_out, vib, [])


# ---------------------------------------------------------------------------------------------


def evaluate(*, block: int = 128, real: int = 3, peer: bool = True, amount: float = 1.0, seeds=(1, 2)) -> dict:
    """All figures as one dict (see the module docstring)."""
    from tools.sung_line import sung_line

    sr = 48000
    out: dict = {"block": block, "sample_rate": sr, "amount": amount, "generated": {}, "real": {}}
    fat1 = None
    if peer:
        from tools.lv2_host import Fat1, Lv2Error

        try:
            fat1 = Fat1(sr)
        except Lv2Error as exc:
            out["peer_error"] = str(exc)
    for seed in seeds:
        line = sung_line(seed=seed, sr=sr)
        key = parse_key(line.key)
        y, c = run_corrector(line.audio, sr=sr, block=block, amount=amount, target=LiveTarget(scale=key))
        fig = c.figures()
        d = fig["shifter_mean_delay_ms"] / 1000
        res = {"melisma": {**generated_metrics(line, y, d), "latency_ms": fig["shifter_mean_delay_ms"],
                           "latency_bound_ms": fig["shifter_max_delay_ms"],
                           "latency_xcorr_ms": round(1000 * measured_delay_s(line.audio, y, sr), 2)}}
        if fat1 is not None:
            yf = fat1.run(line.audio, block=block, scale_pcs=key.pitch_classes, amount=amount)
            lat = fat1.latency_frames / sr
            res["x42-fat1"] = {**generated_metrics(line, yf, lat), "latency_ms": round(1000 * lat, 3),
                               "latency_xcorr_ms": round(1000 * measured_delay_s(line.audio, yf, sr), 2)}
        out["generated"][f"seed {seed}"] = res
    for name, path, notes, _ in real_items(real):
        x = _load(path, sr)[: 40 * sr]
        target = LiveTarget(scale=None)  # chromatic: the nearest semitone (no key is annotated)
        y, c = run_corrector(x, sr=sr, block=block, amount=amount, target=target)
        d = c.figures()["shifter_mean_delay_ms"] / 1000
        res = {"melisma": {**real_metrics(x, y, sr, notes, d, target), "latency_ms": round(1000 * d, 3)}}
        if fat1 is not None:
            yf = fat1.run(x, block=block, scale_pcs=tuple(range(12)), amount=amount)
            lat = fat1.latency_frames / sr
            res["x42-fat1"] = {**real_metrics(x, yf, sr, notes, lat, target), "latency_ms": round(1000 * lat, 3)}
        out["real"][name] = res
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--block", type=int, default=128)
    ap.add_argument("--real", type=int, default=3, help="how many real recordings (vocadito first, then ssvd)")
    ap.add_argument("--amount", type=float, default=1.0)
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    res = evaluate(block=args.block, real=args.real, peer=not args.no_peer, amount=args.amount)
    if args.json:
        print(json.dumps(res, indent=1))
        return 0
    print(f"live correction, {res['sample_rate']} Hz, {res['block']}-frame blocks, amount {res['amount']}")
    if "peer_error" in res:
        print(f"peer: {res['peer_error']}")
    cols = ("latency_ms", "centre_error_in_cents", "centre_error_out_cents", "centre_error_out_p90_cents",
            "vibrato_kept_pct", "slide_time_kept_pct", "notes")
    print("| signal | corrector | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 2) + "|")
    for group in ("generated", "real"):
        for name, per in res[group].items():
            for who, m in per.items():
                print(f"| {name} | {who} | " + " | ".join(str(m.get(k)) for k in cols) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
