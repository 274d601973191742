"""Training and test contours for the ornament classifier, with per-frame labels.

Every example is a random sung phrase (:func:`random_notes`) whose notes carry ornaments drawn
from parametric models, sung by the corpus voice (``tools.corpus.voice.synthesize_voice``), which
also returns the exact f0 and the span of every ornament. The f0 the network sees comes from one
of two sources:

* ``"tracker"``: the project's DSP pitch tracker (``melisma.analysis.pitch.DspPitchTracker``) run
  on the synthetic audio, half of it degraded first (pink/babble/fan noise at 5-30 dB SNR, room
  reverb): real tracker behaviour, octave slips and voicing decisions included;
* ``"parametric"``: the exact f0 with a noise model: white jitter (0-12 cents), octave and fifth
  errors (runs of 5-40 frames), voicing drop-outs (1-15 frames) inside notes, voiced blips in
  rests, ragged voicing edges and a random confidence curve.

Parameter ranges: the literature (vibrato 5.5-8 Hz, 60-200 cents peak to peak; grace notes
30-150 ms; slides 50-300 ms), widened to what ``firmware/docs/ornaments.md`` measured on real
singing (vibrato 4.3-7.2 Hz p10-p90, extent p25 48 cents; scoops 32-153 ms, falls 30-159 ms,
portamento 55-270 ms, grace notes 25-70 ms, p10-p90) and to the slow vibrato of the GTSinger
Vibrato takes (and vibrato carried through slow glides of 80-300 cents) and the long glissandi of
its Glissando takes: vibrato 3.5-8.5 Hz, 30-350 cents; slide_in / slide_out 40-600 ms, 80-700
cents; portamento 50-900 ms (slides move at least 200 cents/s on average, drift at most 60
cents/s); grace notes 25-150 ms, 70-330 cents; trills 4.5-9 Hz, 80-220 cents; mordents 6-12 Hz.

Labels (:data:`melisma.analysis.ornament_model.FRAME_CLASSES`) come from the truth spans:
vibrato from where its fade-in reaches half its extent; slide_in / slide_out / portamento ->
``slide`` (a logistic glide without its flat first and last tenth), which takes precedence over
a vibrato sounding through it unless the glide moves less than the vibrato's peak-to-peak swing
(:func:`_hidden_in_vibrato`: then it stays ``vibrato``); vibrato carried through a glide slower
than ``VIBRATO_GLIDE_MAX_CENTS_PER_S`` is ``vibrato``; trill and mordent -> ``trill``.
Natural unsteadiness is generated too and labelled ``steady`` (:func:`is_ornament`): legato
steps quicker than ``NATURAL_TRANSITION_MS``, slow wander (< 3 Hz, 5-40 cents) and faint wobble
(4-20 cents), the natural rising start (10-50 cents) and drift;
frames that are unvoiced in the input or in the truth are ``unvoiced``.

Run ``python models/ornaments/make_contours.py --help`` to write a dataset as .npz.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # tools.corpus lives at the repo root
    sys.path.insert(0, str(REPO))

from melisma.analysis.ornament_model import FRAME_CODES, HOP_S, contour_features  # noqa: E402
from melisma.analysis.pitch import DspPitchTracker, PitchTrack  # noqa: E402

from tools.corpus import degrade  # noqa: E402
from tools.corpus.voice import VOICES, NoteSpec, synthesize_voice  # noqa: E402

SOURCES = ("tracker", "parametric")
#: Truth ornament type -> frame class.
TYPE_TO_CLASS = {"vibrato": "vibrato", "slide_in": "slide", "slide_out": "slide", "portamento": "slide",
                 "grace": "grace", "trill": "trill", "mordent": "trill", "drift": "steady"}
#: Later entries overwrite earlier ones where spans overlap (the onset ornaments are the shortest).
_LABEL_ORDER = ("drift", "vibrato", "trill", "mordent", "slide_out", "portamento", "slide_in", "grace")
_SR = 16000
#: Legato note changes quicker than this are plain steps (label ``steady``), slower ones portamento;
#: the DSP detector's ``min_portamento_ms`` draws the same line.
NATURAL_TRANSITION_MS = 45.0
#: A "vibrato" slower than this or narrower than that is an unsteady held pitch, not an ornament.
VIBRATO_MIN_HZ = 3.0
VIBRATO_MIN_CENTS = 25.0


def is_ornament(o: dict) -> bool:
    """False for the truth records that only model natural unsteadiness (quick legato steps,
    slow wander, faint wobble): they are labelled ``steady`` and are no events to find."""
    p = o["params"]
    if o["type"] == "portamento":
        return p["duration_ms"] >= NATURAL_TRANSITION_MS
    if o["type"] == "vibrato":
        return p["rate_hz"] >= VIBRATO_MIN_HZ and p["extent_cents"] >= VIBRATO_MIN_CENTS
    return True


#: Slides move at least this fast on average (drift at most 60 cents/s): the classes stay apart.
MIN_GLIDE_CENTS_PER_S = 200.0
#: Vibrato carried through a glide stays *vibrato* only while the glide is slower than this
#: (a gap below ``MIN_GLIDE_CENTS_PER_S``); a faster glide is a slide with vibrato on it.
VIBRATO_GLIDE_MAX_CENTS_PER_S = 150.0


def _slowest_ms(interval_cents: float) -> float:
    return 1000.0 * abs(interval_cents) / MIN_GLIDE_CENTS_PER_S


def _logu(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def random_notes(rng: np.random.Generator, voice: str) -> list[NoteSpec]:
    """One phrase of 4-9 notes with ornaments drawn from the parametric models."""
    preset = VOICES[voice]
    t = float(rng.uniform(0.1, 0.5))
    midi = float(rng.integers(preset.midi_low + 3, preset.midi_high - 3))
    notes: list[NoteSpec] = []
    for _ in range(int(rng.integers(4, 10))):
        dur = _logu(rng, 0.18, 1.6)
        n = NoteSpec(midi=midi, start_s=t, duration_s=dur, detune_cents=float(rng.uniform(-40, 40)),
                     vowel="aeiou"[int(rng.integers(5))], velocity=float(rng.uniform(0.6, 0.9)))
        onset = None
        r = rng.random()
        if dur >= 0.2 and r < 0.22:
            onset = "slide_in"
            interval = (-1 if rng.random() < 0.8 else 1) * _logu(rng, 80, 600)
            n.ornaments.append({"type": "slide_in", "duration_ms": min(_logu(rng, 40, 600), 600 * dur, _slowest_ms(interval)),
                                "interval_cents": interval,
                                "shape": "sigmoid" if rng.random() < 0.6 else "linear"})
        elif dur >= 0.2 and r < 0.40:
            onset = "grace"
            n.ornaments.append({"type": "grace", "duration_ms": _logu(rng, 25, 150),
                                "interval_cents": (1 if rng.random() < 0.65 else -1)
                                * (float(rng.choice([100.0, 200.0, 300.0])) + float(rng.uniform(-30, 30)))})
        elif r < 0.65:
            n.onset_rise_cents = float(rng.uniform(10, 50))
            n.onset_rise_ms = float(rng.uniform(40, 120))
        r = rng.random()
        if dur >= 0.35 and r < 0.45:
            n.ornaments.append({"type": "vibrato", "rate_hz": float(rng.uniform(3.5, 8.5)),
                                "extent_cents": _logu(rng, 30, 350),
                                "onset_ms": float(rng.uniform(0, min(300, 400 * dur))),
                                "fade_in_ms": float(rng.uniform(30, 300)),
                                "rate_jitter": float(rng.uniform(0, 0.15)), "extent_jitter": float(rng.uniform(0, 0.4))})
            if rng.random() < 0.3:
                # vibrato carried through a slow glide: still vibrato (the glide is the note's drift).
                # Slower than VIBRATO_GLIDE_MAX_CENTS_PER_S: a faster glide is a slide, vibrato or not
                n.ornaments[-1].update(onset_ms=float(rng.uniform(0, 60)), fade_in_ms=float(rng.uniform(30, 100)))
                glide = min(float(rng.uniform(80, 300)), VIBRATO_GLIDE_MAX_CENTS_PER_S * dur)
                n.ornaments.append({"type": "drift", "drift_cents": float(rng.choice([-1, 1]) * glide)})
        elif dur >= 0.3 and onset is None and r < 0.58:
            trill = {"type": "trill", "rate_hz": float(rng.uniform(4.5, 9.0)),
                     "interval_cents": (1 if rng.random() < 0.8 else -1) * float(rng.choice([100.0, 200.0]))
                     + float(rng.uniform(-20, 20)), "start_ms": float(rng.choice([0.0, rng.uniform(0, 150)]))}
            if rng.random() < 0.3:
                trill["duration_ms"] = float(rng.uniform(0.5, 0.9) * (dur * 1000 - trill["start_ms"]))
            n.ornaments.append(trill)
        elif dur >= 0.2 and onset is None and r < 0.68:
            n.ornaments.append({"type": "mordent", "rate_hz": float(rng.uniform(6.0, 12.0)),
                                "interval_cents": float(rng.choice([-200.0, -100.0, 100.0, 200.0])),
                                "start_ms": float(rng.uniform(0, 80))})
        elif dur >= 0.3 and r < 0.8 and not any(o["type"] == "drift" for o in n.ornaments):
            # slow: at most 60 cents per second (a glide is faster, see MIN_GLIDE_CENTS_PER_S)
            n.ornaments.append({"type": "drift", "drift_cents": float(rng.uniform(-1, 1) * min(50.0, 60.0 * dur))})
        if not any(o["type"] in ("vibrato", "trill") for o in n.ornaments) and rng.random() < 0.5:
            # an unsteady held pitch (a slow wander or a faint wobble) that is no vibrato
            rate = float(rng.uniform(1.5, 8.0))
            n.ornaments.append({"type": "vibrato", "rate_hz": rate, "onset_ms": 0.0,
                                "extent_cents": float(rng.uniform(5, 40) if rate < 3.0 else rng.uniform(4, 20)),
                                "fade_in_ms": float(rng.uniform(30, 200)), "rate_jitter": float(rng.uniform(0, 0.2)),
                                "extent_jitter": float(rng.uniform(0, 0.5))})
        notes.append(n)
        legato = rng.random() < 0.55
        t += dur + (0.0 if legato else float(rng.uniform(0.04, 0.5)))
        step = int(rng.choice([-7, -5, -4, -3, -2, -2, -1, -1, 0, 1, 1, 2, 2, 3, 4, 5, 7]))
        midi = float(np.clip(midi + step, preset.midi_low, preset.midi_high))
    for i, n in enumerate(notes):
        nxt = notes[i + 1] if i + 1 < len(notes) else None
        legato = nxt is not None and abs(nxt.start_s - n.end_s) < 1e-6
        periodic_to_end = any(o["type"] == "trill" and "duration_ms" not in o for o in n.ornaments)
        if not legato and n.duration_s >= 0.25 and not periodic_to_end and rng.random() < 0.3:
            interval = (-1 if rng.random() < 0.85 else 1) * _logu(rng, 80, 700)
            n.ornaments.append({"type": "slide_out", "duration_ms": min(_logu(rng, 40, 600), 500 * n.duration_s,
                                                                        _slowest_ms(interval)),
                                "interval_cents": interval,
                                "shape": "sigmoid" if rng.random() < 0.7 else "linear"})
        onset_kinds = {o["type"] for o in nxt.ornaments} & {"slide_in", "grace", "mordent", "trill"} if nxt else set()
        if legato and abs(nxt.midi - n.midi) >= 1 and not onset_kinds and not periodic_to_end:
            longest = 1000.0 * min(n.duration_s, nxt.duration_s)
            if rng.random() < 0.4:
                glide = min(_logu(rng, 50, 900), longest, _slowest_ms(100.0 * (nxt.centre_midi - n.centre_midi)))
            elif rng.random() < 0.6:  # a sung legato step is not instantaneous either: no ornament
                glide = float(rng.uniform(8, 40))
            else:
                continue
            n.ornaments.append({"type": "portamento", "duration_ms": glide,
                                "shape": "sigmoid" if rng.random() < 0.6 else "linear"})
            nxt.onset_rise_cents = 0.0
    return notes


def _hidden_in_vibrato(slide: dict, ornaments: list) -> bool:
    """True when a slide moves less than the peak-to-peak swing of a vibrato sounding through
    it: the glide is lost in the vibrato (no listener or tracker can tell it from a vibrato
    swing), so its frames keep the vibrato label."""
    interval = abs(float(slide["params"].get("interval_cents", 0.0)))
    for o in ornaments:
        if o["type"] != "vibrato" or not is_ornament(o):
            continue
        p = o["params"]
        audible_from = o["start_s"] + 0.5 * p["fade_in_ms"] / 1000.0
        overlap = min(slide["end_s"], o["end_s"]) - max(slide["start_s"], audible_from)
        if overlap > 0.5 * (slide["end_s"] - slide["start_s"]) and interval < p["extent_cents"]:
            return True
    return False


def events(ornaments: list) -> list:
    """The truth records that are ornaments to find: :func:`is_ornament`, less the slides hidden
    in a vibrato (their frames are labelled ``vibrato``)."""
    return [o for o in ornaments if is_ornament(o)
            and not (o["type"] in ("slide_in", "slide_out", "portamento") and _hidden_in_vibrato(o, ornaments))]


def truth_labels(take, n_frames: int, input_voiced: np.ndarray) -> np.ndarray:
    """Frame class codes (int8) of a take, on the 5 ms grid."""
    truth_voiced = np.zeros(n_frames, dtype=bool)
    m = min(n_frames, take.f0_hz.size)
    truth_voiced[:m] = take.f0_hz[:m] > 0
    labels = np.full(n_frames, FRAME_CODES["steady"], dtype=np.int8)
    for kind in _LABEL_ORDER:
        for o in take.ornaments:
            if o["type"] != kind:
                continue
            s0, s1 = o["start_s"], o["end_s"]
            if not is_ornament(o):
                continue
            p = o["params"]
            if kind == "vibrato":
                s0 += 0.5 * p["fade_in_ms"] / 1000.0
            if kind in ("slide_in", "slide_out", "portamento") and _hidden_in_vibrato(o, take.ornaments):
                continue
            if kind in ("slide_in", "slide_out", "portamento") and p["shape"] == "sigmoid":
                # the first and last tenth of a logistic glide move by 2 % of it: no visible slide
                s0, s1 = s0 + 0.1 * (s1 - s0), s1 - 0.1 * (s1 - s0)
            i0, i1 = max(0, int(round(s0 / HOP_S))), min(n_frames, int(round(s1 / HOP_S)))
            labels[i0:i1] = FRAME_CODES[TYPE_TO_CLASS[kind]]
    labels[~(truth_voiced & input_voiced)] = FRAME_CODES["unvoiced"]
    return labels


def corrupt(hz: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Apply the tracker noise model to an exact f0 curve; returns (hz, confidence)."""
    hz = hz.astype(np.float64).copy()
    n = hz.size
    voiced = hz > 0
    midi = np.where(voiced, 69 + 12 * np.log2(np.maximum(hz, 1e-9) / 440.0), 0.0)
    midi += voiced * rng.normal(0.0, rng.uniform(0.0, 0.12), n)  # white jitter (semitones)
    conf = np.clip(rng.uniform(0.6, 1.0) + rng.normal(0, 0.1, n), 0.05, 1.0) * voiced
    idx_v = np.flatnonzero(voiced)
    if idx_v.size > 50:
        for _ in range(int(rng.poisson(rng.uniform(0.0, 3.0)))):  # octave / fifth errors
            i = int(rng.choice(idx_v))
            ln = int(rng.integers(5, 41))
            jump = float(rng.choice([12.0, -12.0, 12.0, 7.0, 19.0]))
            seg = slice(i, min(n, i + ln))
            midi[seg] += jump * voiced[seg]
            conf[seg] *= 0.5
        for _ in range(int(rng.poisson(rng.uniform(0.0, 4.0)))):  # voicing drop-outs
            i = int(rng.choice(idx_v))
            seg = slice(i, min(n, i + int(rng.integers(1, 16))))
            voiced[seg] = False
        # ragged voicing edges: onsets/offsets a few frames early or late
        edges = np.flatnonzero(np.diff(voiced.astype(np.int8)) != 0)
        for e in edges:
            if rng.random() < 0.5:
                k = int(rng.integers(1, 4))
                if rng.random() < 0.5:
                    voiced[max(0, e - k + 1) : e + 1] = False
                else:
                    lo, hi = e + 1, min(n, e + 1 + k)
                    src = midi[e] if voiced[e] else midi[min(n - 1, hi)]
                    if src > 0:
                        midi[lo:hi] = np.where(voiced[lo:hi], midi[lo:hi], src + rng.normal(0, 0.3, hi - lo))
                        voiced[lo:hi] = True
    idx_u = np.flatnonzero(~voiced)
    if idx_u.size > 20:
        for _ in range(int(rng.poisson(rng.uniform(0.0, 2.0)))):  # voiced blips in rests
            i = int(rng.choice(idx_u))
            seg = slice(i, min(n, i + int(rng.integers(2, 11))))
            midi[seg] = rng.uniform(45, 85)
            voiced[seg] = True
            conf[seg] = rng.uniform(0.05, 0.5)
    out = np.where(voiced, 440.0 * 2 ** ((midi - 69) / 12.0), 0.0)
    return out.astype(np.float32), np.where(voiced, conf, rng.uniform(0, 0.3, n)).astype(np.float32)


@dataclass
class Example:
    """One labelled contour: the track the network sees, its features and labels, and the take's truth."""

    track: PitchTrack
    features: np.ndarray
    labels: np.ndarray
    ornaments: list
    notes: list
    source: str


def make_example(seed: int, source: str) -> Example:
    """One phrase, rendered through ``source`` (see the module docstring); fully determined by ``seed``."""
    if source not in SOURCES:
        raise ValueError(f"source={source!r}; use one of {SOURCES}")
    rng = np.random.default_rng([seed, SOURCES.index(source)])
    voice = str(rng.choice(["female", "male", "child"], p=[0.45, 0.4, 0.15]))
    notes = random_notes(rng, voice)
    take = synthesize_voice(notes, sr=_SR, voice=voice, seed=seed, max_harmonic_hz=7000.0,
                            duration_s=notes[-1].end_s + float(rng.uniform(0.2, 0.5)))
    if source == "tracker":
        y = take.audio
        if rng.random() < 0.3:
            y = degrade.add_reverb(y, _SR, rt60_s=float(rng.uniform(0.2, 0.8)), seed=seed)
        if rng.random() < 0.5:
            y = degrade.add_noise(y, _SR, snr_db=float(rng.uniform(5, 30)),
                                  noise=str(rng.choice(["pink", "babble", "fan", "white"])), seed=seed)
        track = DspPitchTracker().track(y, sr=_SR)
    else:
        hz, conf = corrupt(take.f0_hz, rng)
        track = PitchTrack(take.hop_s, hz, conf, "parametric")
    n = min(len(track.hz), take.f0_hz.size)
    track = PitchTrack(track.hop_s, track.hz[:n], track.confidence[:n], track.tracker)
    feats = contour_features(track)
    labels = truth_labels(take, n, np.asarray(track.hz) > 0)
    return Example(track, feats, labels, take.ornaments, take.notes, source)


def make_dataset(n_examples: int, *, seed: int = 0, tracker_share: float = 0.5, verbose: bool = False) -> list[Example]:
    """``n_examples`` examples, the first ``tracker_share`` of them tracker-made, seeds ``seed*100000 + i``."""
    out = []
    n_tracker = int(round(tracker_share * n_examples))
    t0 = time.time()
    for i in range(n_examples):
        out.append(make_example(seed * 100000 + i, "tracker" if i < n_tracker else "parametric"))
        if verbose and (i + 1) % 100 == 0:
            print(f"  {i + 1}/{n_examples} contours ({time.time() - t0:.0f} s)", flush=True)
    return out


def pack(examples: list[Example]) -> dict[str, np.ndarray]:
    """Concatenate examples (separated by 64 unvoiced frames) into one features/labels stream."""
    sep_f = np.zeros((64, examples[0].features.shape[1]), np.float32)
    sep_l = np.full(64, FRAME_CODES["unvoiced"], np.int8)
    feats, labels = [], []
    for e in examples:
        feats += [e.features, sep_f]
        labels += [e.labels, sep_l]
    return {"features": np.concatenate(feats), "labels": np.concatenate(labels)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200, help="number of phrases")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tracker-share", type=float, default=0.5)
    ap.add_argument("--out", type=Path, required=True, help=".npz to write (features, labels)")
    args = ap.parse_args(argv)
    ex = make_dataset(args.n, seed=args.seed, tracker_share=args.tracker_share, verbose=True)
    data = pack(ex)
    np.savez_compressed(args.out, **data)
    counts = np.bincount(data["labels"], minlength=6)
    print(f"wrote {args.out}: {len(data['labels'])} frames; class counts {counts.tolist()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
