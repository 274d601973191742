"""A learned denoiser for non-stationary noise: a small int8 TFLite model estimates band gains and comb depths.

The family is RNNoise's (Valin 2018) and DeepFilterNet's first stage: the take is cut into 20 ms
frames (sqrt-Hann, 10 ms hop, 48 kHz), each frame's power is summarised in :data:`N_BANDS`
overlapping triangular bands on a mel/ERB-like scale, and a network looks at those band features
over a short context (:data:`CONTEXT_FRAMES` frames, :data:`LOOKAHEAD_FRAMES` of them ahead) and
says, per band, how much of the frame is voice (a gain in 0..1) and how deep a comb on the frame's
harmonics should cut between them (a depth in 0..1, :func:`comb_gains_to_bins`: noise between
the harmonics of a sung vowel lies inside one band, which a band gain alone cannot reach). The
gains are interpolated back to the FFT bins with the same triangles, the comb applied below
:data:`COMB_TOP_HZ`, and the frames are overlap-added again.

The features per band and frame (:class:`FeatureState`) are the log band power, the log power
over a minimum-statistics noise floor (1.5 s of memory: the model sees where the floor is even
when the noise changes), the band's peakiness (its strongest bin over its mean: harmonics
stand out, noise does not) and its harmonic contrast (:func:`harmonic_contrast`: the frame's f0
is found, and the band's power at its harmonics is compared with the power half-way between them,
so a band where a sung vowel dominates reads high and one where noise does reads about 0.2).
The model (``models/denoise/melisma_denoise_int8.tflite``, trained by
``models/denoise/train_denoise.py``, see its model card) is fully convolutional over time with
'valid' padding: every output frame depends on exactly its own context, so the stage streams
exactly in any block sizes (its output :meth:`LearnedDenoiser.latency_samples` late) and
:meth:`LearnedDenoiser.denoise` is the aligned offline form.

Examples
--------
>>> import numpy as np
>>> from melisma.render.learned_denoise import LearnedDenoiser
>>> sr = 48000
>>> rng = np.random.default_rng(0)
>>> noise = (0.02 * rng.standard_normal(sr)).astype(np.float32)
>>> quieter = LearnedDenoiser().denoise(noise, sr)  # doctest: +SKIP
>>> bool(np.std(quieter) < 0.3 * np.std(noise))  # doctest: +SKIP
True
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.fft as sfft

from ..errors import ModelError, RenderError
from .stages import OutputDelay, Stage, db_to_gain

__all__ = [
    "COMB_TOP_HZ",
    "CONTEXT_FRAMES",
    "HOP",
    "LOOKAHEAD_FRAMES",
    "MODEL_FILE",
    "N_BANDS",
    "N_FEATURES",
    "N_FFT",
    "OUT_FRAMES",
    "REFINE_MODES",
    "SR",
    "FeatureState",
    "LearnedDenoiser",
    "RefineState",
    "band_centres_hz",
    "band_weights",
    "comb_gains_to_bins",
    "comb_shape",
    "frame_power",
    "gains_to_bins",
    "harmonic_analysis",
    "harmonic_contrast",
    "refine_gains",
]

#: The sample rate the model was trained at (the engine's).
SR = 48000
#: Frame length (20 ms) and hop (10 ms) in samples.
N_FFT = 960
HOP = 480
N_BINS = N_FFT // 2 + 1
#: Bands (triangles on a mel-like scale from 0 Hz to 20 kHz).
N_BANDS = 32
#: Features per frame: log power, log power over the noise floor, peakiness, harmonic contrast; one of each per band.
N_FEATURES = 4 * N_BANDS
#: Frames the model sees for one output frame (its receptive field), and how many of them lie ahead.
CONTEXT_FRAMES = 31
LOOKAHEAD_FRAMES = 2
#: Output frames per model call (the exported model's fixed shape is OUT_FRAMES + CONTEXT_FRAMES - 1 in).
OUT_FRAMES = 32
#: Where the model lives under :func:`melisma.models_runtime.models_dir`.
MODEL_FILE = ("denoise", "melisma_denoise_int8.tflite")
#: Minimum-statistics window of the noise floor feature (frames) and the smoothing before it.
FLOOR_FRAMES = 150
FLOOR_SMOOTHING = 0.7
_POWER_FLOOR = 1e-10
#: The harmonic-contrast feature: f0 candidates (Hz, 1/10 semitone apart), the harmonics that pick the
#: frame's f0 (up to PICK_TOP_HZ) and those that measure each band's contrast (up to CONTRAST_TOP_HZ).
F0_RANGE_HZ = (70.0, 1000.0)
F0_STEP_ST = 0.1
PICK_TOP_HZ = 4000.0
CONTRAST_TOP_HZ = 8000.0
#: The comb stage: bins up to COMB_TOP_HZ can be lowered between the frame's harmonics (above it the
#: harmonics of a sung vowel smear with vibrato within a frame, and the comb would cut the voice).
COMB_TOP_HZ = 5000.0
#: How :class:`LearnedDenoiser` turns band gains into bin gains (:func:`refine_gains`; "none": interpolated only).
REFINE_MODES = ("none", "blend", "shaped", "wiener")


def band_centres_hz(n_bands: int = N_BANDS, top_hz: float = 20000.0) -> np.ndarray:
    """Centres of the triangular bands: evenly spaced in mel from 0 Hz to ``top_hz``.

    >>> c = band_centres_hz()
    >>> c.size, float(c[0]), round(float(c[1])), float(c[-1])
    (32, 0.0, 81, 20000.0)
    """
    mel = np.linspace(0.0, 2595.0 * math.log10(1.0 + top_hz / 700.0), n_bands)
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def band_weights() -> np.ndarray:
    """(N_BANDS, N_BINS) triangular weights; every bin's weights sum to 1 (above 20 kHz: the top band).

    >>> w = band_weights()
    >>> w.shape, bool(np.allclose(w.sum(axis=0), 1.0))
    ((32, 481), True)
    """
    centres = band_centres_hz()
    freqs = np.fft.rfftfreq(N_FFT, 1.0 / SR)
    w = np.zeros((N_BANDS, N_BINS))
    for b in range(N_BANDS):
        if b > 0:
            lo, c = centres[b - 1], centres[b]
            rise = (freqs - lo) / (c - lo)
            w[b] = np.where((freqs >= lo) & (freqs <= c), rise, w[b])
        if b < N_BANDS - 1:
            c, hi = centres[b], centres[b + 1]
            fall = (hi - freqs) / (hi - c)
            w[b] = np.where((freqs >= c) & (freqs < hi), fall, w[b])
        else:
            w[b] = np.where(freqs >= centres[b], 1.0, w[b])
    return w


_WEIGHTS = band_weights().astype(np.float32)
_WEIGHTS_T = np.ascontiguousarray(_WEIGHTS.T)
_BAND_NORM = (1.0 / _WEIGHTS.sum(axis=1)).astype(np.float32)
_GROUP_STARTS = np.flatnonzero(np.diff(np.concatenate([[-1], np.argmax(_WEIGHTS, axis=0)])))
_GROUP_SIZES = np.diff(np.concatenate([_GROUP_STARTS, [N_BINS]])).astype(np.float32)
_WINDOW = np.sqrt(0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)  # periodic sqrt-Hann


def frame_power(spectra: np.ndarray) -> np.ndarray:
    """|X|^2 / N_FFT of complex frame spectra (m, N_BINS), float32."""
    return ((spectra.real**2 + spectra.imag**2) * np.float32(1.0 / N_FFT)).astype(np.float32)


def gains_to_bins(gains: np.ndarray) -> np.ndarray:
    """Band gains (m, N_BANDS) interpolated to the FFT bins (m, N_BINS) with the band triangles."""
    return np.asarray(gains, np.float32) @ _WEIGHTS


def _read_at(freqs_hz: np.ndarray) -> np.ndarray:
    """(N_BINS,) weights that read a spectrum at ``freqs_hz`` (linear between bins), summed over them."""
    w = np.zeros(N_BINS, np.float64)
    pos = np.asarray(freqs_hz, np.float64) * (N_FFT / SR)
    lo = np.floor(pos).astype(int)
    frac = pos - lo
    ok = lo + 1 < N_BINS
    np.add.at(w, lo[ok], 1.0 - frac[ok])
    np.add.at(w, lo[ok] + 1, frac[ok])
    return w


_HARMONIC_TABLES: dict[str, np.ndarray] = {}


def _harmonic_tables() -> dict[str, np.ndarray]:
    """The f0 candidates and the bin weights at their harmonics and half-way between them (made once)."""
    if not _HARMONIC_TABLES:
        lo, hi = F0_RANGE_HZ
        f0 = lo * 2.0 ** (np.arange(int(12 * math.log2(hi / lo) / F0_STEP_ST) + 1) * F0_STEP_ST / 12.0)
        pick = np.zeros((N_BINS, f0.size))
        for c, f in enumerate(f0):
            k = np.arange(1, int(PICK_TOP_HZ // f) + 1)
            # sqrt(K) x (mean log power at the harmonics - mean half-way): a contrast weighed by its evidence,
            # so a high candidate with three harmonics does not win on chance
            pick[:, c] = _read_at(k * f) / math.sqrt(k.size) - _read_at((k[:-1] + 0.5) * f) * (math.sqrt(k.size) / (k.size - 1))
        k_band = [np.arange(1, int(CONTRAST_TOP_HZ // f) + 1) for f in f0]
        _HARMONIC_TABLES.update(
            f0=f0.astype(np.float32), pick=pick.astype(np.float32),
            at=np.stack([_read_at(k * f) for k, f in zip(k_band, f0, strict=True)]).astype(np.float32),
            between=np.stack([_read_at((k[:-1] + 0.5) * f) for k, f in zip(k_band, f0, strict=True)]).astype(np.float32))
    return _HARMONIC_TABLES


def harmonic_analysis(power: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(harmonic contrast (m, N_BANDS), f0_hz (m,)) of frames with bin power ``power``: see :func:`harmonic_contrast`.

    ``f0_hz`` is each frame's best f0 candidate, also in noise and silence (where the contrast says
    it means nothing): the comb of :func:`comb_shape` is built on it.
    """
    tables = _harmonic_tables()
    log_power = np.log10(np.asarray(power, np.float32) + np.float32(_POWER_FLOOR))
    log_power -= log_power.max(axis=1, keepdims=True)  # relative to the frame's peak: exactly 0 in silence
    best = np.argmax(log_power @ tables["pick"], axis=1)
    at, between = tables["at"][best], tables["between"][best]
    n_at, n_between = at @ _WEIGHTS_T, between @ _WEIGHTS_T
    level_at = ((log_power * at) @ _WEIGHTS_T) / np.maximum(n_at, np.float32(1e-6))
    level_between = ((log_power * between) @ _WEIGHTS_T) / np.maximum(n_between, np.float32(1e-6))
    contrast = np.where((n_at > 0.3) & (n_between > 0.3), level_at - level_between, np.float32(0.0))
    return np.clip(contrast, -1.0, 3.0).astype(np.float32), tables["f0"][best]


def harmonic_contrast(power: np.ndarray) -> np.ndarray:
    """Per frame and band, how far the frame's harmonics stand above the spectrum half-way between them.

    Each frame's f0 is the candidate (70-1000 Hz) whose harmonics up to 4 kHz stand highest above the
    points half-way between them (log power); per band the contrast is the mean log10 power at its
    harmonics minus that half-way between, 0 where a band holds no harmonic. A sung vowel reads
    0.5-1.5 in the bands it dominates, noise about 0.2 (the best of many candidates on chance).

    >>> t = np.arange(N_FFT * 4) / SR
    >>> x = sum(np.sin(2 * np.pi * 220.0 * k * t) / k for k in range(1, 20)).astype(np.float32)
    >>> frames = np.lib.stride_tricks.sliding_window_view(x, N_FFT)[::HOP] * _WINDOW
    >>> c = harmonic_contrast(frame_power(np.fft.rfft(frames, axis=1)))
    >>> bool(c[:, 8:16].mean() > 1.0)
    True
    """
    return harmonic_analysis(power)[0]


_BIN_HZ = (np.arange(N_BINS) * (SR / N_FFT)).astype(np.float32)


def comb_shape(f0_hz: np.ndarray) -> np.ndarray:
    """(m, N_BINS) raised-cosine combs on each frame's harmonics: 1 at ``k * f0``, 0 half-way, 1 above COMB_TOP_HZ.

    A band's comb depth ``c`` (the model's second output) turns its bins' gains into
    ``g * (1 - c * (1 - comb))``: at ``c = 1`` the noise between the harmonics goes, the harmonics stay.

    >>> c = comb_shape(np.array([200.0]))
    >>> [round(float(v), 2) for v in c[0, [4, 6, 8, 200]]]  # 200 Hz, 300 Hz (half-way), 400 Hz, 10 kHz
    [1.0, 0.0, 1.0, 1.0]
    """
    f0 = np.asarray(f0_hz, np.float32)[:, None]
    comb = np.float32(0.5) + np.float32(0.5) * np.cos(np.float32(2.0 * np.pi) * _BIN_HZ[None, :] / f0)
    return np.where(_BIN_HZ[None, :] <= COMB_TOP_HZ, comb, np.float32(1.0)).astype(np.float32)


def comb_gains_to_bins(gains: np.ndarray, depths: np.ndarray, f0_hz: np.ndarray) -> np.ndarray:
    """Bin gains (m, N_BINS) from band gains and band comb depths (m, N_BANDS) on frames with ``f0_hz``."""
    depth = np.clip(np.asarray(depths, np.float32), 0.0, 1.0) @ _WEIGHTS
    return gains_to_bins(gains) * (np.float32(1.0) - depth * (np.float32(1.0) - comb_shape(f0_hz)))


def pad_features() -> np.ndarray:
    """The feature row of a silent frame: what the model sees before the first frame of a take."""
    return FeatureState().features(np.zeros((1, N_BINS), np.float32))[0]


class FeatureState:
    """Per-frame band features with the noise floor's memory; the same code serves training and run time.

    >>> st = FeatureState()
    >>> f = st.features(np.full((3, N_BINS), 1e-4, np.float32))
    >>> f.shape, [round(float(v), 2) for v in f[2, [0, N_BANDS, 2 * N_BANDS]]]
    ((3, 128), [0.4, 0.0, 0.0])
    """

    def __init__(self) -> None:
        self.smoothed: np.ndarray | None = None
        self.ring = np.full((FLOOR_FRAMES, N_BANDS), np.inf, np.float32)
        self.count = 0

    def features(self, power: np.ndarray) -> np.ndarray:
        """Features (m, N_FEATURES) of frames with bin power ``power`` (m, N_BINS), in order, state carried."""
        return self.features_and_f0(power)[0]

    def features_and_f0(self, power: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(features (m, N_FEATURES), f0_hz (m,)): :meth:`features` and each frame's f0 pick (:func:`harmonic_analysis`)."""
        power = np.asarray(power, np.float32)
        band = (power @ _WEIGHTS_T) * _BAND_NORM
        level = np.log10(band + np.float32(_POWER_FLOOR))
        peak = np.maximum.reduceat(power, _GROUP_STARTS, axis=1)
        mean = np.add.reduceat(power, _GROUP_STARTS, axis=1) / _GROUP_SIZES
        peakiness = np.log10((peak + np.float32(_POWER_FLOOR)) / (mean + np.float32(_POWER_FLOOR)))
        over = np.empty_like(level)
        a = np.float32(FLOOR_SMOOTHING)
        for i in range(level.shape[0]):
            s = level[i] if self.smoothed is None else a * self.smoothed + (np.float32(1.0) - a) * level[i]
            self.smoothed = s
            self.ring[self.count % FLOOR_FRAMES] = s
            self.count += 1
            over[i] = level[i] - self.ring.min(axis=0)
        contrast, f0 = harmonic_analysis(power)
        out = np.concatenate([(level + np.float32(5.0)) * np.float32(0.4), over, peakiness, contrast], axis=1)
        return out.astype(np.float32), f0


def _load_model(path: Path, num_threads: int, runtime: str | None) -> Any:
    from ..models_runtime import TfliteModel

    model = TfliteModel(path, num_threads=num_threads, runtime=runtime)
    want_in = (OUT_FRAMES + CONTEXT_FRAMES - 1, N_FEATURES)
    shape_in = tuple(model.input_shape[1:])
    outs = [tuple(int(s) for s in d["shape"][1:]) for d in model.output_details]
    # (frames, N_BANDS): band gains only; (frames, 2 * N_BANDS): band gains, then the bands' comb depths
    if shape_in != want_in or len(outs) != 1 or outs[0] not in ((OUT_FRAMES, N_BANDS), (OUT_FRAMES, 2 * N_BANDS)):
        raise ModelError(
            f"model file {path} takes {shape_in} and gives {outs}; this melisma's learned denoiser needs "
            f"(frames, features) = {want_in} in and {(OUT_FRAMES, 2 * N_BANDS)} (or {(OUT_FRAMES, N_BANDS)}) out: "
            "re-train it with models/denoise/train_denoise.py or re-install melisma with its models"
        )
    return model


@dataclass
class LearnedDenoiser(Stage):
    """Non-stationary noise reduction by a small int8 TFLite model estimating band gains and comb depths (48 kHz).

    Parameters
    ----------
    reduction_db : float
        The most any bin is lowered (the gain floor): noise is lowered by up to this much, never
        removed to silence. 0 passes the audio through (delayed as a stage).
    model_path : str or PathLike, optional
        The ``.tflite`` file; default ``models/denoise/melisma_denoise_int8.tflite`` under
        :func:`melisma.models_runtime.models_dir`.
    num_threads : int
        Interpreter threads (1: the engine budgets one core per job).
    runtime : str, optional
        Force a TFLite runtime (see :func:`melisma.models_runtime.load_interpreter`).
    refine : str
        How the model's band gains become bin gains, one of :data:`REFINE_MODES`: ``"none"`` applies
        them as they are (interpolated to the bins) with the model's comb depths
        (:func:`comb_gains_to_bins`; a model without them: the band gains alone); the others
        ignore the comb depths and refine the band gains per FFT bin (:func:`refine_gains`: a
        decision-directed Wiener filter driven by them) so the noise between a voiced frame's
        harmonics is lowered more than the band's gain.

    Raises
    ------
    ModelError
        From :meth:`load` or the first call: the model file is missing, damaged, or not this
        denoiser's model (the message names the file and what would work).
    RenderError
        Audio at another rate than 48 kHz, or a negative ``reduction_db``.
    """

    reduction_db: float = 30.0
    model_path: str | os.PathLike | None = None
    num_threads: int = 1
    runtime: str | None = None
    refine: str = "none"
    _model: Any = field(default=None, init=False, repr=False, compare=False)
    _stream: Any = field(default=None, init=False, repr=False, compare=False)

    def describe(self) -> dict[str, Any]:
        return {"stage": self.name, "reduction_db": self.reduction_db, "model": self.path().name,
                "refine": self.refine,
                "frame_ms": 1000.0 * N_FFT / SR, "latency_ms": 1000.0 * self.latency_samples(SR) / SR}

    def path(self) -> Path:
        """The model file this stage loads."""
        if self.model_path is not None:
            return Path(self.model_path)
        from ..models_runtime import models_dir

        return models_dir().joinpath(*MODEL_FILE)

    def load(self) -> LearnedDenoiser:
        """Load (and check) the model now; raises ModelError with the reason when it cannot. Returns self."""
        if self._model is None:
            self._model = _load_model(self.path(), int(self.num_threads), self.runtime)
        return self

    def reset(self) -> None:
        self._stream = None

    def latency_samples(self, sr: int) -> int:
        """Streaming delay: a frame plus the model's look-ahead (40 ms at 48 kHz)."""
        return N_FFT + LOOKAHEAD_FRAMES * HOP

    def _check(self, sr: int) -> None:
        if sr != SR:
            raise RenderError(f"LearnedDenoiser: the model runs at {SR} Hz, got sr={sr}; resample the take to {SR} Hz first")
        if not self.reduction_db >= 0:
            raise RenderError(f"LearnedDenoiser: reduction_db={self.reduction_db} must be >= 0 (e.g. 30)")
        if self.refine not in REFINE_MODES:
            raise RenderError(f"LearnedDenoiser: refine={self.refine!r} is not one of {', '.join(map(repr, REFINE_MODES))}")

    def denoise(self, audio: np.ndarray, sr: int) -> np.ndarray:
        """The whole signal denoised and aligned with its input (no latency): the offline form."""
        x = np.asarray(audio, dtype=np.float32)
        late = self.latency_samples(sr)
        pad = np.zeros((*x.shape[:-1], late), np.float32)
        return np.ascontiguousarray(self(np.concatenate([x, pad], axis=-1), sr, reset=True)[..., late:])

    def process_into(self, audio: np.ndarray, sr: int) -> None:
        """The offline form, overwriting ``audio`` (float32) with the aligned result."""
        audio[...] = self.denoise(audio, sr)

    def process(self, audio: np.ndarray, sr: int) -> np.ndarray:
        """Streaming form: returns the denoised audio :meth:`latency_samples` late."""
        self._check(sr)
        x = audio if audio.ndim == 2 else audio[None, :]
        st = self._stream
        if st is None:
            if self.reduction_db > 0:
                self.load()
            st = self._stream = {"channels": [self._new_channel() for _ in range(x.shape[0])],
                                 "delay": OutputDelay(x.shape[0], self.latency_samples(sr))}
        elif len(st["channels"]) != x.shape[0]:
            raise RenderError(f"LearnedDenoiser: a streaming block of {x.shape[0]} channel(s) does not continue the "
                              f"stream of {len(st['channels'])}; call with reset=True")
        if self.reduction_db == 0:
            st["delay"].push(x.astype(np.float32))
        else:
            outs = [self._feed(ch, x[c]) for c, ch in enumerate(st["channels"])]
            n = min(o.size for o in outs)
            st["delay"].push(np.stack([o[:n] for o in outs]))
            for c, ch in enumerate(st["channels"]):
                ch["ready"] = outs[c][n:]
        out = st["delay"].pop(x.shape[1])
        return out if audio.ndim == 2 else out[0]

    @staticmethod
    def _new_channel() -> dict[str, Any]:
        past = CONTEXT_FRAMES - 1 - LOOKAHEAD_FRAMES
        return {
            "pending": np.zeros(N_FFT - HOP, np.float32),  # the padded input: a hop of zeros in front
            "features": FeatureState(),
            "rows": np.repeat(pad_features()[None, :], past, axis=0),  # context rows of frames [gain_frame - past, ...)
            "spectra": np.zeros((0, N_BINS), np.complex64),  # frames waiting for their gains
            "f0": np.zeros(0, np.float32),  # and their f0 picks (the comb's)
            "carry": np.zeros(HOP, np.float32),
            "drop": HOP,
            "ready": np.zeros(0, np.float32),
            "refine": RefineState(),
        }

    def _feed(self, ch: dict[str, Any], x: np.ndarray) -> np.ndarray:
        """Take mono input ``x``; return the finished output it completes (aligned, before the delay line)."""
        buf = np.concatenate([ch["pending"], x.astype(np.float32)])
        m = (buf.size - N_FFT) // HOP + 1 if buf.size >= N_FFT else 0
        if m > 0:
            frames = np.lib.stride_tricks.sliding_window_view(buf[: (m - 1) * HOP + N_FFT], N_FFT)[::HOP][:m]
            spectra = sfft.rfft(frames * _WINDOW, axis=1).astype(np.complex64)
            rows, f0 = ch["features"].features_and_f0(frame_power(spectra))
            ch["rows"] = np.concatenate([ch["rows"], rows])
            ch["spectra"] = np.concatenate([ch["spectra"], spectra])
            ch["f0"] = np.concatenate([ch["f0"], f0])
            ch["pending"] = buf[m * HOP :].copy()
        else:
            ch["pending"] = buf
        done = [ch["ready"]]
        n_in = OUT_FRAMES + CONTEXT_FRAMES - 1
        while True:
            n_ready = ch["rows"].shape[0] - (CONTEXT_FRAMES - 1)  # frames whose whole context is there
            if n_ready <= 0:
                break
            k = min(n_ready, OUT_FRAMES)
            window = np.zeros((1, n_in, N_FEATURES), np.float32)
            take = min(n_in, ch["rows"].shape[0])
            window[0, :take] = ch["rows"][:take]
            (out_rows,) = self._model.predict(window)
            gains, depths = out_rows[0, :k, :N_BANDS], out_rows[0, :k, N_BANDS:]
            frames = ch["spectra"][:k]
            if self.refine != "none":
                bins = refine_gains(frame_power(frames), gains, ch["refine"], mode=self.refine)
            elif depths.shape[1]:
                bins = comb_gains_to_bins(gains, depths, ch["f0"][:k])
            else:
                bins = gains_to_bins(gains)
            spec = frames * np.maximum(bins, np.float32(db_to_gain(-self.reduction_db)))
            blocks = sfft.irfft(spec, n=N_FFT, axis=1).astype(np.float32) * _WINDOW
            out = blocks[:, :HOP].copy()
            out[0] += ch["carry"]
            out[1:] += blocks[:-1, HOP:]
            ch["carry"] = blocks[-1, HOP:].copy()
            out = out.reshape(-1)
            drop = min(ch["drop"], out.size)
            ch["drop"] -= drop
            done.append(out[drop:])
            ch["rows"] = ch["rows"][k:]
            ch["spectra"] = ch["spectra"][k:]
            ch["f0"] = ch["f0"][k:]
        return np.concatenate(done)


@dataclass
class RefineState:
    """What :func:`refine_gains` carries from frame to frame: the last clean power and the noise estimate per bin."""

    clean: np.ndarray | None = None
    noise: np.ndarray | None = None


def refine_gains(power: np.ndarray, band_gains: np.ndarray, state: RefineState, *, mode: str = "shaped",
                 alpha: float = 0.9, noise_smoothing: float = 0.5) -> np.ndarray:
    """Per-bin gains (m, N_BINS) from band gains: the band gain drives a decision-directed Wiener filter per bin.

    The band gain ``g`` says how much of a band's power is noise, ``(1 - g^2)`` of it; spread over
    the band's bins (the triangles) that is a per-bin noise estimate (smoothed over frames by
    ``noise_smoothing``), from which each bin's a-priori SNR is estimated decision-directed
    (Ephraim-Malah, weight ``alpha`` on the last frame's clean estimate) and its Wiener gain
    ``xi / (1 + xi)`` follows: bins on a harmonic keep their level, the noise between the harmonics
    is lowered more than the band's gain would. ``mode="wiener"`` returns those gains; ``"shaped"``
    (the default) rescales them band by band so that each band keeps the energy its band gain
    gives: the per-bin filter then only moves the gain within a band, to the harmonics.

    >>> p = np.full((4, N_BINS), 1e-4, np.float32)
    >>> p[:, 20] = 1e-1  # one strong bin (a harmonic) in noise
    >>> half = np.full((4, N_BANDS), 0.5, np.float32)  # every band: half of its amplitude is voice
    >>> g = refine_gains(p, half, RefineState())  # the band's gain goes to the harmonic, not to its neighbours
    >>> [round(float(v), 2) for v in g[-1, 19:22]], round(float(gains_to_bins(half)[-1, 19]), 2)
    ([0.0, 0.5, 0.0], 0.5)
    >>> w = refine_gains(p, half, RefineState(), mode="wiener")  # unscaled: the harmonic kept, flat noise lowered
    >>> bool(w[-1, 20] > 0.75 and w[-1, 40] < 0.05)
    True
    """
    if mode not in REFINE_MODES[1:]:
        raise RenderError(f"refine_gains: mode={mode!r} is not one of {', '.join(map(repr, REFINE_MODES[1:]))}")
    power = np.asarray(power, np.float32)
    g = np.clip(np.asarray(band_gains, np.float32), 0.0, 1.0)
    out = np.empty_like(power)
    for t in range(power.shape[0]):
        p = power[t]
        band = (p @ _WEIGHTS_T) * _BAND_NORM
        noise = ((np.float32(1.0) - g[t] ** 2) * band) @ _WEIGHTS + np.float32(_POWER_FLOOR)
        if state.noise is not None:
            noise = np.float32(noise_smoothing) * state.noise + np.float32(1.0 - noise_smoothing) * noise
        state.noise = noise
        post = p / noise
        prior = np.maximum(post - np.float32(1.0), np.float32(0.0))
        if state.clean is not None:
            prior = np.float32(alpha) * state.clean / noise + np.float32(1.0 - alpha) * prior
        gain = prior / (np.float32(1.0) + prior)
        if mode == "shaped":
            want = (g[t] ** 2) * (p @ _WEIGHTS_T)
            got = ((gain**2) * p) @ _WEIGHTS_T
            ratio = np.sqrt(want / np.maximum(got, np.float32(1e-20)))
            gain = np.minimum(gain * (ratio @ _WEIGHTS), np.float32(1.0))
        elif mode == "blend":
            want = (g[t] ** 2) * (p @ _WEIGHTS_T)
            got = ((gain**2) * p) @ _WEIGHTS_T
            ratio = np.sqrt(want / np.maximum(got, np.float32(1e-20)))
            shaped = np.minimum(gain * (ratio @ _WEIGHTS), np.float32(1.0))
            plain = g[t] @ _WEIGHTS
            share = np.float32(1.0) - plain**2  # the bin's noise share by its band: refine where noise is
            gain = plain + share * (shaped - plain)
        state.clean = (gain**2) * p
        out[t] = gain
    return out
