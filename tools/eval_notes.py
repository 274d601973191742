"""Note transcription and melody-guided correction on real singing, Melisma side by side with peers.

Subcommands::

    python tools/eval_notes.py notes  [--data ../shared/data] [--systems melisma,basic-pitch,pyin-hmm] [--json F]
    python tools/eval_notes.py melody [--data ../shared/data] [--json F]
    python tools/eval_notes.py ornaments [--data ../shared/data] [--json F]

``--engine DIR`` on any of them scores another checkout's engine (its ``firmware`` folder), e.g.
main's, for a before/after in the same run.

``notes``: mir_eval note-transcription scores per clip and overall on vocadito track 1 (against
both note annotators, A1 and A2) and the SSVD v2 sight-singing clips in shared/data (24 of them
here; ``--ssvd DIR`` scores every recording of an SSVD folder instead, e.g. the whole upstream test
set; recording 101666 is always left out, its annotation is transposed; the per-file offset
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
note annotation with timing jitter, one note skipped and one added; the engine analyzes the clip
with that melody, corrects it at ``--correction 1`` and an independent tracker (SwiftF0,
``swift-f0`` on PyPI) measures the note centres of the result against the melody notes (before
and after). See :func:`cmd_melody`.

``ornaments``: the GTSinger plain/technique pairs through the engine's segmentation (with its energy
cue) and its default ornament detector: vibrato and slide coverage and the notes found, so that a
segmentation change that cuts vibrato or slides into notes shows (:func:`cmd_ornaments`).

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

# --engine DIR (before argparse): score another checkout's engine (e.g. main's, for before/after)
_ENGINE = next((sys.argv[i + 1] for i, a in enumerate(sys.argv[:-1]) if a == "--engine"), None)
sys.path.insert(0, _ENGINE or str(Path(__file__).resolve().parents[1] / "firmware"))

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


#: SSVD recordings whose annotation does not belong to the audio: left out wherever they are found.
SSVD_BAD_ANNOTATIONS = {"101666": "its notes sit about +2030 cents off the audio (a transposition; shared/data SOURCE.txt)"}


def load_clips(root: Path, *, which: str = "all", ssvd_dir: Path | None = None) -> list[Clip]:
    """vocadito track 1 (two annotators: two clips on the same audio) and the SSVD clips: the
    subset in ``root`` (shared/data), or every recording of ``ssvd_dir`` (``--ssvd``, e.g. the
    upstream test folder with its 127 recordings), less :data:`SSVD_BAD_ANNOTATIONS`."""
    clips: list[Clip] = []
    if which in ("all", "vocadito"):
        d = root / "vocadito"
        for ann in ("A1", "A2"):
            rows = np.loadtxt(d / "Annotations" / "Notes" / f"vocadito_1_notes{ann}.csv", delimiter=",", ndmin=2)
            ref = np.stack([rows[:, 0], rows[:, 0] + rows[:, 2], 69.0 + 12.0 * np.log2(rows[:, 1] / 440.0)], axis=1)
            clips.append(Clip(f"vocadito_1/{ann}", d / "Audio" / "vocadito_1.wav", ref, remove_offset=False))
    if which in ("all", "ssvd"):
        for wav in sorted((ssvd_dir or root / "ssvd_v2_subset" / "test").glob("*.flac")):
            if wav.stem in SSVD_BAD_ANNOTATIONS or not wav.with_suffix(".txt").exists():
                continue
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
    try:
        notes = segment_notes(track, audio=audio(path), sr=SR)
    except TypeError:  # an engine from before the energy cue (--engine)
        notes = segment_notes(track)
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
    # 20-cent bins (librosa's default is 10): the pitch HMM's cost grows with the square of the bins,
    # and the notes' pitch is the median over many frames anyway
    f0, _vflag, vprob = librosa.pyin(y, fmin=65.0, fmax=1000.0, sr=SR, frame_length=1024, hop_length=hop, resolution=0.2)
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
    overlapping it most, over the pairs within a semitone (a tuning offset, not a wrong or
    polyphonic note); 0 when there are none."""
    diffs = []
    for on, off, m in ref:
        if len(est) == 0:
            break
        ov = np.minimum(est[:, 1], off) - np.maximum(est[:, 0], on)
        k = int(np.argmax(ov))
        if ov[k] > 0 and abs(est[k, 2] - m) <= 1.0:
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
            keep = cache / f"{name}.{clip.path.stem}.notes.npy" if cache is not None and name != "melisma" else None
            if keep is not None and keep.exists():  # a peer's notes from an earlier run (--cache)
                est_by_path[clip.path] = np.load(keep)
            else:
                est_by_path[clip.path] = fn(clip.path, cache)
                if keep is not None:
                    keep.parent.mkdir(parents=True, exist_ok=True)
                    np.save(keep, est_by_path[clip.path])
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
    ssvd = [k for k in per_clip if k.startswith("ssvd/")]
    groups = {"vocadito A1": ["vocadito_1/A1"], "vocadito A2": ["vocadito_1/A2"], f"ssvd ({len(ssvd)})": ssvd}
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
    clips = load_clips(root, which=args.which, ssvd_dir=Path(args.ssvd) if args.ssvd else None)
    if not clips:
        print(f"no clips found under {root}" + (f" or {args.ssvd}" if args.ssvd else ""), file=sys.stderr)
        return 2
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
# melody-guided correction


def make_melody(ref: np.ndarray, rng: np.random.Generator) -> tuple[list[tuple[float, float, int]], list[int], np.ndarray]:
    """A melody from a note annotation, as a singer would deviate from it.

    Every note rounded to its semitone; onsets moved by a common offset (±150 ms) and each by its own
    jitter (sd 80 ms, at most ±250 ms, order kept); one note left out of the melody (the singer
    *added* it) and one melody note put in the longest rest (the singer *skipped* it).
    Returns the melody ``[(start, end, midi)]``, for every annotated note the index of its melody
    note (-1 for the added one) and the inserted note's span.
    """
    n = len(ref)
    common = rng.uniform(-0.15, 0.15)
    jit = np.clip(rng.normal(0.0, 0.08, n), -0.25, 0.25)
    starts = ref[:, 0] + common + jit
    ends = ref[:, 1] + common + jit
    for i in range(1, n):  # keep the order and no overlap
        starts[i] = max(starts[i], starts[i - 1] + 0.03)
        ends[i - 1] = min(ends[i - 1], starts[i])
    ends = np.maximum(ends, starts + 0.03)
    mel = [(float(max(0.0, a)), float(b), round(float(m))) for a, b, m in zip(starts, ends, ref[:, 2], strict=True)]
    added = int(rng.integers(1, n - 1)) if n > 3 else -1
    gaps = ref[1:, 0] - ref[:-1, 1]
    g = int(np.argmax(gaps)) if n > 1 else 0
    skipped = np.array([ref[g, 1] + 0.25 * gaps[g], ref[g, 1] + 0.75 * gaps[g]]) if n > 1 and gaps[g] > 0.3 else None
    index = list(range(n))
    if added >= 0:
        del mel[added]
        index = [i if i < added else (i - 1 if i > added else -1) for i in index]
    if skipped is not None:
        pitch = int(round(float(ref[g, 2]))) + 2
        pos = sum(1 for m in mel if m[0] < skipped[0])
        mel.insert(pos, (float(skipped[0]), float(skipped[1]), pitch))
        index = [i if i < pos else i + 1 for i in index]
        index = [-1 if k == added else i for k, i in enumerate(index)]
    return mel, index, skipped if skipped is not None else np.zeros(0)


def write_midi(path: Path, melody: Sequence[tuple[float, float, int]]) -> None:
    """A one-track MIDI file of the melody (120 bpm, 480 ticks per beat)."""
    import mido

    mid = mido.MidiFile(ticks_per_beat=480)
    tr = mido.MidiTrack()
    mid.tracks.append(tr)
    tr.append(mido.MetaMessage("set_tempo", tempo=500000))
    events = sorted([(a, 1, m) for a, _b, m in melody] + [(b, 0, m) for _a, b, m in melody])
    now = 0
    for t, on, m in events:
        tick = int(round(t * 960))
        tr.append(mido.Message("note_on" if on else "note_off", note=int(m), velocity=90 if on else 0, time=tick - now))
        now = tick
    mid.save(str(path))


def swift_midi(y16: np.ndarray, detector) -> tuple[np.ndarray, np.ndarray]:
    """SwiftF0's frame times and MIDI pitch (NaN where unvoiced)."""
    r = detector.detect(np.asarray(y16, dtype=np.float32), 16000)
    hz = np.asarray(r.pitch_hz, dtype=np.float64)
    ok = np.asarray(r.confidence) >= 0.5
    midi = np.where(ok & (hz > 0), 69.0 + 12.0 * np.log2(np.maximum(hz, 1e-9) / 440.0), np.nan)
    return np.asarray(r.timestamps, dtype=np.float64), midi


def note_errors(times: np.ndarray, midi: np.ndarray, ref: np.ndarray, melody: Sequence[tuple[float, float, int]],
                index: Sequence[int]) -> np.ndarray:
    """Cents from each sung note's centre (SwiftF0 median over the middle 60 % of the annotated span)
    to its melody note; NaN for the added notes and notes SwiftF0 finds unvoiced."""
    out = np.full(len(ref), np.nan)
    for i, (on, off, _m) in enumerate(ref):
        if index[i] < 0:
            continue
        a, b = on + 0.2 * (off - on), off - 0.2 * (off - on)
        sel = (times >= a) & (times <= b) & np.isfinite(midi)
        if sel.sum() >= 3:
            out[i] = 100.0 * (float(np.median(midi[sel])) - melody[index[i]][2])
    return out


def cmd_melody(args: argparse.Namespace) -> int:
    import tempfile

    from melisma.analysis.intonation import analyze_pitch
    from melisma.audio_io import load_audio, resample
    from melisma.render.pitch import correct_vocal, correction_from_sliders
    from swift_f0 import SwiftF0

    root = Path(args.data)
    clips = [c for c in load_clips(root) if c.name != "vocadito_1/A2"]  # one melody per recording
    if args.clips:
        clips = [c for c in clips if any(s in c.name for s in args.clips.split(","))]
    detector = SwiftF0(threads=2, spin=False)
    settings = correction_from_sliders({}, correction=args.correction)
    rows = []
    all_before: list[np.ndarray] = []
    all_after: list[np.ndarray] = []
    tmp = Path(tempfile.mkdtemp(prefix="eval-melody-"))
    for ci, clip in enumerate(clips):
        rng = np.random.default_rng(1000 + ci)
        melody, index, _ins = make_melody(clip.ref, rng)
        mid = tmp / "melody.mid"
        write_midi(mid, melody)
        y48, _ = load_audio(clip.path, sr=48000, mono=True)
        y48 = np.asarray(y48, dtype=np.float32)
        t0 = time.perf_counter()
        pitch = analyze_pitch(y48, sr=48000, melody_path=mid)
        corrected, _rep = correct_vocal(y48, pitch, sr=48000, settings=settings)
        secs = time.perf_counter() - t0
        tb, mb = swift_midi(resample(y48, orig_sr=48000, target_sr=16000), detector)
        ta, ma = swift_midi(resample(np.asarray(corrected, dtype=np.float32), orig_sr=48000, target_sr=16000), detector)
        eb = note_errors(tb, mb, clip.ref, melody, index)
        ea = note_errors(ta, ma, clip.ref, melody, index)
        ok = np.isfinite(eb) & np.isfinite(ea)
        all_before.append(np.abs(eb[ok]))
        all_after.append(np.abs(ea[ok]))
        rows.append({"clip": clip.name, "notes": int(ok.sum()), "before_median": float(np.median(np.abs(eb[ok]))),
                     "after_median": float(np.median(np.abs(ea[ok]))), "after_p90": float(np.percentile(np.abs(ea[ok]), 90)),
                     "plan_notes": len(pitch["notes"]), "seconds": secs})
        r = rows[-1]
        print(f"{clip.name:16s} notes {r['notes']:3d}  |error| median before {r['before_median']:5.1f} c  after "
              f"{r['after_median']:5.1f} c  p90 after {r['after_p90']:5.1f} c  ({r['plan_notes']} plan notes, {secs:.0f} s)",
              flush=True)
    b, a = np.concatenate(all_before), np.concatenate(all_after)
    summary = {"notes": int(a.size), "before_median": float(np.median(b)), "before_p90": float(np.percentile(b, 90)),
               "after_median": float(np.median(a)), "after_p90": float(np.percentile(a, 90)),
               "after_within_20c": float(np.mean(a <= 20.0))}
    print(f"\n== overall ({summary['notes']} notes, SwiftF0): |error| to the melody, median before {summary['before_median']:.1f} c, "
          f"after {summary['after_median']:.1f} c; p90 before {summary['before_p90']:.1f} c, after {summary['after_p90']:.1f} c")
    if args.json:
        Path(args.json).write_text(json.dumps({"clips": rows, "summary": summary}, indent=1, default=float))
    return 0


# ---------------------------------------------------------------------------------------------
# ornaments on the GTSinger plain/technique pairs, through the engine's segmentation


def cmd_ornaments(args: argparse.Namespace) -> int:
    from melisma.analysis.intonation import default_ornament_detector
    from melisma.analysis.notes import segment_notes
    from melisma.analysis.ornaments import detect_ornaments
    from melisma.analysis.pitch import track_pitch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from eval_pitch_real import GT_PAIRS, coverage

    d = Path(args.data) / "gtsinger_demo"
    detector = default_ornament_detector()
    rows = []
    print(f"== GTSinger pairs, ornament detector {getattr(detector, 'name', type(detector).__name__)}: share of voiced "
          "frames in vibrato/trill and in slides, notes found (control -> technique)")
    print(f"{'pair':34s} {'vibrato':>15s} {'slides':>15s} {'notes':>11s}")
    for plain, tech in GT_PAIRS:
        row: dict = {"pair": tech}
        for label, name in (("control", plain), ("technique", tech)):
            path = d / f"{name}.flac"
            if not path.exists():
                break
            y = audio(path)
            track = track_pitch(y, sr=SR)
            try:
                notes = segment_notes(track, audio=y, sr=SR)
            except TypeError:  # an engine from before the energy cue (--engine)
                notes = segment_notes(track)
            orns = detect_ornaments(track, notes, detector=detector)
            row[label] = {**coverage(track, orns), "notes": len(notes)}
        if "technique" not in row:
            continue
        rows.append(row)
        c, t = row["control"], row["technique"]
        print(f"{tech:34s} {c['vibrato']:6.2f} -> {t['vibrato']:5.2f} {c['slides']:6.2f} -> {t['slides']:5.2f} "
              f"{c['notes']:4d} -> {t['notes']:3d}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=float))
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
    a.add_argument("--ssvd", help="score every SSVD recording (.flac + .txt) in this folder instead of shared/data's "
                                  "subset, e.g. the test/ folder of github.com/xk-wang/SSVD-v2.0 (127 recordings)")
    a.add_argument("--clips", help="only clips whose name contains one of these (comma separated)")
    a.add_argument("--per-clip", action="store_true", help="print every clip's scores")
    a.add_argument("--cache", help="keep Melisma's pitch tracks and the peers' notes here between runs (a development aid)")
    a.add_argument("--json", help="also write the numbers here")
    a.add_argument("--engine", help="the firmware folder of the engine to score (default: this checkout's)")
    a.set_defaults(func=cmd_notes)
    b = sub.add_parser("melody", help="correction toward a melody made from the annotations, measured by SwiftF0")
    b.add_argument("--data", default=default_data)
    b.add_argument("--clips", help="only clips whose name contains one of these (comma separated)")
    b.add_argument("--correction", type=float, default=1.0)
    b.add_argument("--engine", help="the firmware folder of the engine to score (default: this checkout's)")
    b.add_argument("--json", help="also write the numbers here")
    b.set_defaults(func=cmd_melody)
    c = sub.add_parser("ornaments", help="GTSinger pairs: vibrato and slide coverage through the engine's segmentation")
    c.add_argument("--data", default=default_data)
    c.add_argument("--engine", help="the firmware folder of the engine to score (default: this checkout's)")
    c.add_argument("--json", help="also write the numbers here")
    c.set_defaults(func=cmd_ornaments)
    args = ap.parse_args(argv)
    if not Path(args.data).is_dir():
        print(f"no data at {args.data}; pass --data", file=sys.stderr)
        return 2
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
