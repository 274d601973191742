"""Note transcription and melody-guided correction on real singing, Melisma side by side with peers.

Subcommands::

    python tools/eval_notes.py notes  [--data ../shared/data] [--systems melisma,basic-pitch,pyin-hmm] [--json F]
    python tools/eval_notes.py melody [--data ../shared/data] [--json F]

``notes``: mir_eval note-transcription scores per clip and overall on vocadito track 1 (against
both note annotators, A1 and A2) and the 47 SSVD v2 sight-singing clips (the per-file offset
removed: the median cents difference between the system's notes and the annotation, each system
its own, since those annotations sit 15-30 cents above the audio):

* COn: onset within ±50 ms;
* COnP: onset within ±50 ms and pitch within ±50 cents;
* COnPOff: COnP and offset within max(50 ms, 20 % of the note).

"overall" pools the matches of every clip (micro F1: 2·matched / (reference + estimated notes));
"mean" averages the per-clip F1. The systems, all run in the same process on the same audio:

* ``melisma``: the engine's own DSP pitch track and :func:`melisma.analysis.notes.segment_notes`;
* ``basic-pitch``: Spotify's basic-pitch (``basic-pitch`` on PyPI, its bundled model through
  whichever runtime is installed: TFLite or ONNX), defaults as shipped;
* ``basic-pitch-mono``: the same model made fair to a monophonic singer: overlapping notes
  resolved to the loudest, 58 ms minimum note length, pitch refined by its pitch bends;
* ``pyin-hmm``: librosa's pYIN f0 and a note HMM in the manner of Tony (Mauch et al. 2015):
  per semitone an attack and a sustain state, one silence state, Viterbi-decoded
  (:func:`pyin_hmm_notes`).

``melody``: the melody-guided correction (issue 13): for every real clip a melody is made from its
note annotation with timing jitter, one note skipped and one added; the engine analyses the clip
with that melody, corrects it at ``--correction 1`` and an independent tracker (SwiftF0,
``swift-f0`` on PyPI) measures the note centres of the result against the melody notes (before
and after). See :func:`melody_eval`.

The peers are in the ``peers`` extra of pyproject.toml (basic-pitch installs with ``--no-deps``
where its TensorFlow pin does not fit: its TFLite/ONNX model needs only the runtime).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "firmware"))

SR = 16000
ONSET_TOL_S = 0.05
PITCH_TOL_CENTS = 50.0
OFFSET_RATIO = 0.2


# ---------------------------------------------------------------------------------------------
# data


@dataclass
class Clip:
    """A real recording and its note annotation (onset s, offset s, MIDI float)."""

    name: str
    path: Path
    ref: np.ndarray  # (n, 3): onset_s, offset_s, midi
    remove_offset: bool  # SSVD: per-file offset removed before scoring


def load_clips(root: Path, *, which: str = "all") -> list[Clip]:
    """vocadito track 1 (two annotators: two clips on the same audio) and the SSVD subset."""
    clips: list[Clip] = []
    if which in ("all", "vocadito"):
        d = root / "vocadito"
        for ann in ("A1", "A2"):
            rows = np.loadtxt(d / "Annotations" / "Notes" / f"vocadito_1_notes{ann}.csv", delimiter=",", ndmin=2)
            ref = np.stack([rows[:, 0], rows[:, 0] + rows[:, 2], 69.0 + 12.0 * np.log2(rows[:, 1] / 440.0)], axis=1)
            clips.append(Clip(f"vocadito_1/{ann}", d / "Audio" / "vocadito_1.wav", ref, remove_offset=False))
    if which in ("all", "ssvd"):
        for wav in sorted((root / "ssvd_v2_subset" / "test").glob("*.flac")):
            ref = np.loadtxt(wav.with_suffix(".txt"), ndmin=2)
            clips.append(Clip(f"ssvd/{wav.stem}", wav, ref[:, :3], remove_offset=True))
    return clips


_AUDIO: dict[Path, np.ndarray] = {}


def audio(path: Path) -> np.ndarray:
    """Mono audio at 16 kHz (cached for the run)."""
    if path not in _AUDIO:
        from melisma.audio_io import load_audio

        y, _ = load_audio(path, sr=SR, mono=True)
        _AUDIO.clear()  # one file at a time is enough (clips of one audio come in a row)
        _AUDIO[path] = np.asarray(y, dtype=np.float32)
    return _AUDIO[path]


# ---------------------------------------------------------------------------------------------
# systems: each maps a path to notes (n, 3): onset_s, offset_s, midi


def melisma_track(path: Path, cache: Path | None):
    """The engine's pitch track of a clip (cached on disk under ``cache`` when given)."""
    from melisma.analysis.pitch import PitchTrack, track_pitch

    if cache is not None:
        f = cache / (path.stem + ".track.npz")
        if f.exists():
            z = np.load(f)
            return PitchTrack(float(z["hop_s"]), z["hz"], z["confidence"], tracker="dsp")
    track = track_pitch(audio(path), sr=SR)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(cache / (path.stem + ".track.npz"), hop_s=track.hop_s, hz=track.hz, confidence=track.confidence)
    return track


def melisma_notes(path: Path, cache: Path | None = None) -> np.ndarray:
    """Melisma: the engine's pitch track and note segmentation."""
    from melisma.analysis.notes import segment_notes

    track = melisma_track(path, cache)
    notes = segment_notes(track, audio=audio(path), sr=SR)
    return np.array([[n.start_s, n.end_s, n.midi] for n in notes]).reshape(-1, 3)


def basic_pitch_notes(path: Path, cache: Path | None = None, *, mono: bool = False) -> np.ndarray:
    """basic-pitch's note events (defaults as shipped, or the monophonic variant)."""
    import logging

    logging.getLogger().setLevel(logging.ERROR)
    from basic_pitch.inference import predict

    kw = {"minimum_note_length": 58.0} if mono else {}
    _out, _midi, events = predict(str(path), **kw)
    rows = []
    for start, end, pitch, amp, bends in events:
        midi = float(pitch)
        if mono and bends:
            midi += float(np.median(bends)) / 3.0  # bends are in contour bins, 3 per semitone
        rows.append((float(start), float(end), midi, float(amp)))
    rows.sort()
    if mono:
        rows = _monophonic(rows)
    return np.array([r[:3] for r in rows]).reshape(-1, 3)


def _monophonic(rows: list[tuple[float, float, float, float]]) -> list[tuple[float, float, float, float]]:
    """Overlapping notes resolved: the louder keeps its span, the other is cut (or dropped)."""
    out: list[tuple[float, float, float, float]] = []
    for r in sorted(rows, key=lambda r: -r[3]):
        s, e = r[0], r[1]
        for o in out:
            if o[0] < e and s < o[1]:  # overlap with a louder note: keep the part before or after it
                if s < o[0]:
                    e = min(e, o[0])
                else:
                    s = max(s, o[1])
        if e - s >= 0.05:
            out.append((s, e, r[2], r[3]))
    return sorted(out)


def pyin_hmm_notes(path: Path, cache: Path | None = None) -> np.ndarray:
    """pYIN (librosa) f0 and a Tony-style note HMM.

    States: per semitone ``k`` (MIDI 36-84) an attack and a sustain state, plus one silence state.
    Attack lasts one frame and leads to sustain; sustain stays (mean note 0.3 s), moves to
    silence, or to the attack of another semitone (legato), nearer ones likelier; silence starts
    any note. Emissions: voiced probability times a Gaussian (sd 35 cents) of the pYIN pitch around
    the semitone for the note states, the unvoiced probability for silence. A note's pitch is the
    median pYIN f0 over it (not the semitone: the scoring tolerance is 50 cents).
    """
    import librosa

    y = audio(path)
    hop = 160
    f0, _vflag, vprob = librosa.pyin(y, fmin=65.0, fmax=1000.0, sr=SR, frame_length=1024, hop_length=hop)
    midi = librosa.hz_to_midi(np.where(np.isfinite(f0), f0, 440.0))
    vprob = np.where(np.isfinite(f0), vprob, 0.0)
    pitches = np.arange(36, 85)
    kk = len(pitches)
    n_states = 2 * kk + 1  # 0..k-1 attack, k..2k-1 sustain, 2k silence
    sil = 2 * kk
    sigma = 0.35
    g = np.exp(-0.5 * ((midi[None, :] - pitches[:, None]) / sigma) ** 2)
    like = np.empty((n_states, len(midi)))
    like[:kk] = vprob[None, :] * g + 1e-6
    like[kk:2 * kk] = vprob[None, :] * g + 1e-6
    like[sil] = (1.0 - vprob) * 0.3 + 1e-6
    trans = np.zeros((n_states, n_states))
    p_stay, p_off, p_change = 1 - 1 / 30.0, 0.01, 1 / 30.0 - 0.01
    dist = np.abs(pitches[:, None] - pitches[None, :]).astype(float)
    legato = np.exp(-dist / 4.0)
    np.fill_diagonal(legato, 0.0)
    legato /= legato.sum(axis=1, keepdims=True)
    for k in range(kk):
        trans[k, kk + k] = 1.0
        trans[kk + k, kk + k] = p_stay
        trans[kk + k, sil] = p_off
        trans[kk + k, :kk] = p_change * legato[k]
    trans[sil, sil] = 0.99
    trans[sil, :kk] = 0.01 / kk
    trans /= trans.sum(axis=1, keepdims=True)
    states = librosa.sequence.viterbi(like, trans)
    hop_s = hop / SR
    notes = []
    i = 0
    n = len(states)
    while i < n:
        s = states[i]
        if s == sil:
            i += 1
            continue
        k = s % kk
        j = i + 1
        while j < n and states[j] == kk + k:
            j += 1
        seg = f0[i:j]
        seg = seg[np.isfinite(seg)]
        if (j - i) * hop_s >= 0.05 and seg.size:
            notes.append((i * hop_s, j * hop_s, float(np.median(librosa.hz_to_midi(seg)))))
        i = j
    return np.array(notes).reshape(-1, 3)


SYSTEMS: dict[str, Callable[..., np.ndarray]] = {
    "melisma": melisma_notes,
    "basic-pitch": basic_pitch_notes,
    "basic-pitch-mono": lambda p, c=None: basic_pitch_notes(p, c, mono=True),
    "pyin-hmm": pyin_hmm_notes,
}


# ---------------------------------------------------------------------------------------------
# scoring


def file_offset_cents(ref: np.ndarray, est: np.ndarray) -> float:
    """Median cents difference (est minus ref) between each reference note and the estimated note
    overlapping it most (0 when none overlaps)."""
    diffs = []
    for on, off, m in ref:
        if len(est) == 0:
            break
        ov = np.minimum(est[:, 1], off) - np.maximum(est[:, 0], on)
        k = int(np.argmax(ov))
        if ov[k] > 0:
            diffs.append(100.0 * (est[k, 2] - m))
    return float(np.median(diffs)) if diffs else 0.0


def score(ref: np.ndarray, est: np.ndarray) -> dict[str, tuple[int, int, int]]:
    """``{metric: (matched, n_ref, n_est)}`` for COn, COnP and COnPOff (mir_eval)."""
    import mir_eval

    def hz(m: np.ndarray) -> np.ndarray:
        return 440.0 * 2.0 ** ((np.asarray(m, dtype=np.float64) - 69.0) / 12.0)

    def intervals(x: np.ndarray) -> np.ndarray:
        iv = x[:, :2].astype(np.float64).copy()
        iv[:, 1] = np.maximum(iv[:, 1], iv[:, 0] + 1e-3)
        return iv

    nr, ne = len(ref), len(est)
    if nr == 0 or ne == 0:
        return {k: (0, nr, ne) for k in ("COn", "COnP", "COnPOff")}
    ri, ei = intervals(ref), intervals(est)
    rp, ep = hz(ref[:, 2]), hz(est[:, 2])
    con = mir_eval.transcription.match_note_onsets(ri, ei, onset_tolerance=ONSET_TOL_S)
    conp = mir_eval.transcription.match_notes(ri, rp, ei, ep, onset_tolerance=ONSET_TOL_S, pitch_tolerance=PITCH_TOL_CENTS,
                                              offset_ratio=None)
    conpoff = mir_eval.transcription.match_notes(ri, rp, ei, ep, onset_tolerance=ONSET_TOL_S,
                                                 pitch_tolerance=PITCH_TOL_CENTS, offset_ratio=OFFSET_RATIO)
    return {"COn": (len(con), nr, ne), "COnP": (len(conp), nr, ne), "COnPOff": (len(conpoff), nr, ne)}


def f1(m: int, nr: int, ne: int) -> float:
    """F1 from matched / reference / estimated counts."""
    return 2.0 * m / (nr + ne) if nr + ne else 0.0


def eval_system(name: str, clips: Sequence[Clip], *, cache: Path | None) -> dict:
    """Every clip scored for one system: per clip and pooled by data set."""
    fn = SYSTEMS[name]
    per_clip: dict[str, dict] = {}
    est_by_path: dict[Path, np.ndarray] = {}
    t0 = time.perf_counter()
    for clip in clips:
        if clip.path not in est_by_path:
            est_by_path[clip.path] = fn(clip.path, cache)
        est = est_by_path[clip.path]
        ref = clip.ref.copy()
        offset = file_offset_cents(ref, est) if clip.remove_offset else 0.0
        ref[:, 2] += offset / 100.0
        s = score(ref, est)
        per_clip[clip.name] = {**{k: f1(*v) for k, v in s.items()}, "counts": s, "offset_cents": offset,
                               "n_ref": len(ref), "n_est": len(est)}
    return {"per_clip": per_clip, "seconds": time.perf_counter() - t0}


def summarise(per_clip: dict[str, dict]) -> dict[str, dict[str, float]]:
    """Pooled (micro) and mean F1 per group: vocadito A1, A2, SSVD."""
    groups = {"vocadito A1": ["vocadito_1/A1"], "vocadito A2": ["vocadito_1/A2"],
              "ssvd (47)": [k for k in per_clip if k.startswith("ssvd/")]}
    out: dict[str, dict[str, float]] = {}
    for g, keys in groups.items():
        keys = [k for k in keys if k in per_clip]
        if not keys:
            continue
        row: dict[str, float] = {}
        for metric in ("COn", "COnP", "COnPOff"):
            m = sum(per_clip[k]["counts"][metric][0] for k in keys)
            nr = sum(per_clip[k]["counts"][metric][1] for k in keys)
            ne = sum(per_clip[k]["counts"][metric][2] for k in keys)
            row[metric] = f1(m, nr, ne)
            row[metric + " mean"] = float(np.mean([per_clip[k][metric] for k in keys]))
        out[g] = row
    return out


def cmd_notes(args: argparse.Namespace) -> int:
    root = Path(args.data)
    clips = load_clips(root, which=args.which)
    if args.clips:
        clips = [c for c in clips if any(s in c.name for s in args.clips.split(","))]
    cache = Path(args.cache) if args.cache else None
    report: dict = {}
    for name in args.systems.split(","):
        if name not in SYSTEMS:
            print(f"unknown system {name!r}; use some of {', '.join(SYSTEMS)}", file=sys.stderr)
            return 2
        r = eval_system(name, clips, cache=cache)
        r["summary"] = summarise(r["per_clip"])
        report[name] = r
    names = list(report)
    print(f"== note transcription F1 (mir_eval: onset ±{ONSET_TOL_S * 1000:.0f} ms, pitch ±{PITCH_TOL_CENTS:.0f} c, "
          f"offset {OFFSET_RATIO:.0%}); overall = pooled matches, mean = mean of per-clip F1")
    print(f"{'system':18s} {'group':13s} {'COn':>6s} {'COnP':>6s} {'COnPOff':>7s}   {'mean COn':>8s} {'COnP':>6s} {'COnPOff':>7s}  time s")
    for name in names:
        for g, row in report[name]["summary"].items():
            print(f"{name:18s} {g:13s} {row['COn']:6.3f} {row['COnP']:6.3f} {row['COnPOff']:7.3f}   "
                  f"{row['COn mean']:8.3f} {row['COnP mean']:6.3f} {row['COnPOff mean']:7.3f}  {report[name]['seconds']:.0f}")
    if args.per_clip:
        print("\n== per clip, COn / COnP / COnPOff F1 (notes: reference / estimated)")
        print(f"{'clip':16s} " + " ".join(f"{n[:20]:>22s}" for n in names))
        for clip in report[names[0]]["per_clip"]:
            cells = []
            for n in names:
                c = report[n]["per_clip"][clip]
                cells.append(f"{c['COn']:.2f}/{c['COnP']:.2f}/{c['COnPOff']:.2f} {c['n_ref']:3d}/{c['n_est']:3d}")
            print(f"{clip:16s} " + " ".join(f"{x:>22s}" for x in cells))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=float))
    return 0


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = os.environ.get("MELISMA_SHARED_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("notes", help="note transcription F1 per clip and overall, Melisma and the peers")
    a.add_argument("--data", default=default_data)
    a.add_argument("--systems", default="melisma,basic-pitch,basic-pitch-mono,pyin-hmm")
    a.add_argument("--which", choices=("all", "vocadito", "ssvd"), default="all")
    a.add_argument("--clips", help="only clips whose name contains one of these (comma separated)")
    a.add_argument("--per-clip", action="store_true", help="print every clip's scores")
    a.add_argument("--cache", help="keep Melisma's pitch tracks here between runs (a development aid)")
    a.add_argument("--json", help="also write the numbers here")
    a.set_defaults(func=cmd_notes)
    args = ap.parse_args(argv)
    if not Path(args.data).is_dir():
        print(f"no data at {args.data}; pass --data", file=sys.stderr)
        return 2
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
