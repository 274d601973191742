"""f0 tracking with the on-device int8 TFLite pitch model (a :class:`~melisma.analysis.pitch.PitchTracker`).

The model sees a spectrogram, not raw samples, which keeps it cheap (about 0.9 M multiply-adds
per 10 ms frame):

1. audio at 16 kHz, a 1024-sample Hann window every 160 samples (10 ms hop), frame ``i`` centred
   on sample ``160 * i``;
2. STFT magnitudes of bins 3..130 (47-2031 Hz, 15.6 Hz apart), in dB relative to the frame's
   loudest bin, floored at -80 dB and scaled to 0..1 (so the input is level-independent);
3. two level rows, because step 2 hides how loud a frame is and a faint pitched reverb tail
   after a note looks like singing without them (:func:`level_features`): the frame's level
   relative to a causal running peak that decays by 6 dB/s, and the level change over the last
   50 ms; each is repeated across the 128 bins so the model keeps one input tensor;
4. the model takes three consecutive frames (``i-1, i, i+1``) plus the level rows of frame ``i``
   and returns, for the middle frame, logits over 300 pitch bins 20 cents apart from 46.875 Hz
   (up to 1500 Hz) and one voicing logit (a model trained without level rows, input
   ``(batch, 3, 128)``, still loads);
5. decoding: softmax over the 9 bins around the best bin, their weighted mean in cents (so the
   estimate is finer than a bin); voicing with hysteresis: a frame is voiced when its voicing
   probability is at least ``voicing_threshold``, or at least ``voicing_threshold_low`` while the
   frame before was voiced (so a note does not drop out where noise briefly masks it), and the
   frame is not near-silent (peak below -60 dBFS).

Every frame is decided from its own 3-frame neighbourhood, the levels of the frames before it
(the running peak) and, for voicing, the previous frame's decision. All of that is causal state,
so the streaming mode (:class:`StreamingPitchModel`) gives the same numbers as offline tracking,
with a latency of half a window plus one hop of lookahead (32 + 10 ms) plus the block size.

The network, its training data and accuracy are described in ``models/pitch/MODEL_CARD.md``.

Examples
--------
>>> import numpy as np
>>> from melisma.analysis.pitch_model import TflitePitchTracker
>>> sr = 16000
>>> t = np.arange(sr) / sr
>>> y = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
>>> track = TflitePitchTracker().track(y, sr=sr)  # doctest: +SKIP
>>> round(float(np.median(track.hz[track.hz > 0])))  # doctest: +SKIP
220
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import AnalysisError
from .pitch import PitchTrack

__all__ = [
    "CENTS_PER_BIN",
    "CONTEXT_FRAMES",
    "FMIN_HZ",
    "HOP_LENGTH",
    "HOP_S",
    "LEVEL_ROWS",
    "MODEL_FILE",
    "N_FFT",
    "N_INPUT_BINS",
    "N_PITCH_BINS",
    "SR",
    "LevelState",
    "StreamingPitchModel",
    "TflitePitchTracker",
    "context_frames",
    "decode_pitch",
    "default_model_path",
    "level_features",
    "model_inputs",
    "pitch_bin_hz",
    "spectrogram_features",
    "voicing_hysteresis",
]

SR = 16000
N_FFT = 1024
HOP_LENGTH = 160
HOP_S = HOP_LENGTH / SR
FIRST_BIN = 3
N_INPUT_BINS = 128
CONTEXT_FRAMES = 3
N_PITCH_BINS = 300
CENTS_PER_BIN = 20.0
FMIN_HZ = 46.875
FLOOR_DB = 80.0
SILENCE_DBFS = -60.0
#: Level rows appended to the spectral context (see :func:`level_features`).
LEVEL_ROWS = 2
LEVEL_RANGE_DB = 60.0
LEVEL_DECAY_DB_PER_S = 6.0
LEVEL_SLOPE_FRAMES = 5
LEVEL_SLOPE_RANGE_DB = 30.0
_LEVEL_FLOOR_DB = -120.0
MODEL_FILE = "melisma_pitch_int8.tflite"
#: Decoding defaults for the committed model (chosen on generated validation clips, see the model card).
VOICING_THRESHOLD = 0.9
VOICING_THRESHOLD_LOW: float | None = 0.4

_WINDOW = np.hanning(N_FFT + 1)[:-1].astype(np.float32)  # periodic Hann
_DECODE_HALF_WIDTH = 4


def pitch_bin_hz(bins: np.ndarray | float) -> np.ndarray:
    """Centre frequency (Hz) of a (fractional) pitch bin.

    >>> float(pitch_bin_hz(0)), round(float(pitch_bin_hz(60)), 2)
    (46.875, 93.75)
    """
    return FMIN_HZ * 2.0 ** (np.asarray(bins, dtype=np.float64) * CENTS_PER_BIN / 1200.0)


def hz_to_pitch_bin(f0_hz: np.ndarray | float) -> np.ndarray:
    """Fractional pitch bin of a frequency (inverse of :func:`pitch_bin_hz`)."""
    f = np.maximum(np.asarray(f0_hz, dtype=np.float64), 1e-9)
    return 1200.0 / CENTS_PER_BIN * np.log2(f / FMIN_HZ)


def _frames(x: np.ndarray, n_frames: int, first_sample: int) -> np.ndarray:
    """(n_frames, N_FFT) windows whose frame ``j`` starts at ``first_sample + j * HOP_LENGTH`` of ``x``."""
    need = first_sample + (n_frames - 1) * HOP_LENGTH + N_FFT
    if need > len(x):
        x = np.pad(x, (0, need - len(x)))
    view = np.lib.stride_tricks.sliding_window_view(x[first_sample:need], N_FFT)[::HOP_LENGTH]
    return view[:n_frames]


def _features_from_frames(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features 0..1, frame peak dBFS, spectral level dB) of windows ``(n, N_FFT)``."""
    import scipy.fft

    spec = np.abs(scipy.fft.rfft(frames * _WINDOW, axis=1)[:, FIRST_BIN : FIRST_BIN + N_INPUT_BINS])
    db = 20.0 * np.log10(spec + 1e-9)
    level_db = np.maximum(db.max(axis=1), _LEVEL_FLOOR_DB)
    db -= db.max(axis=1, keepdims=True)
    feats = (np.clip(db, -FLOOR_DB, 0.0) + FLOOR_DB) / FLOOR_DB
    # the peak sample in the middle hop of the window, for the silence gate
    mid = frames[:, N_FFT // 2 - HOP_LENGTH // 2 : N_FFT // 2 + HOP_LENGTH // 2]
    peak_db = 20.0 * np.log10(np.abs(mid).max(axis=1) + 1e-9)
    return feats.astype(np.float32), peak_db.astype(np.float32), level_db.astype(np.float32)


def spectrogram_features(y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Model input features of 16 kHz mono audio.

    Parameters
    ----------
    y : np.ndarray
        ``(samples,)`` float audio at 16 kHz.

    Returns
    -------
    features : np.ndarray
        ``(n_frames, N_INPUT_BINS)`` float32 in 0..1, frame ``i`` centred on sample ``i * HOP_LENGTH``;
        ``n_frames = ceil(len(y) / HOP_LENGTH)``.
    peak_db : np.ndarray
        ``(n_frames,)`` peak level (dBFS) of the 10 ms around each frame centre.
    level_db : np.ndarray
        ``(n_frames,)`` the frame's loudest bin in dB (the reference that ``features`` are
        relative to), input of :func:`level_features`.

    Examples
    --------
    >>> f, p, lv = spectrogram_features(np.zeros(16000, np.float32))
    >>> f.shape, p.shape, lv.shape
    ((100, 128), (100,), (100,))
    """
    x = np.asarray(y, dtype=np.float32)
    n_frames = int(np.ceil(len(x) / HOP_LENGTH))
    if n_frames == 0:
        return np.zeros((0, N_INPUT_BINS), np.float32), np.zeros(0, np.float32), np.zeros(0, np.float32)
    xp = np.pad(x, (N_FFT // 2, 0))  # frame 0 centred on sample 0
    feats, peaks, levels = [], [], []
    for c0 in range(0, n_frames, 2048):  # bounded memory on a Pi Zero
        n = min(2048, n_frames - c0)
        f, p, lv = _features_from_frames(_frames(xp, n, c0 * HOP_LENGTH))
        feats.append(f)
        peaks.append(p)
        levels.append(lv)
    return np.concatenate(feats), np.concatenate(peaks), np.concatenate(levels)


@dataclass
class LevelState:
    """What :func:`level_features` carries from one block to the next: the running peak (dB) after
    the last frame and the levels of the last :data:`LEVEL_SLOPE_FRAMES` frames.
    """

    running_peak_db: float = -np.inf
    recent_db: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))


def level_features(level_db: np.ndarray, *, state: LevelState | None = None) -> tuple[np.ndarray, LevelState]:
    """The model's two level inputs per frame, from :func:`spectrogram_features`' ``level_db``.

    Column 0: the frame's level relative to a running peak, a peak hold that decays by
    :data:`LEVEL_DECAY_DB_PER_S` (1 = at the peak, 0 = :data:`LEVEL_RANGE_DB` or more below it).
    Column 1: the level change over the last :data:`LEVEL_SLOPE_FRAMES` frames (0.5 = steady,
    0 / 1 = falling / rising by :data:`LEVEL_SLOPE_RANGE_DB` or more). Both are causal, so
    feeding a take block by block with the returned state gives the same values as all at once.
    Both are relative, so the input gain does not matter.

    Parameters
    ----------
    level_db : np.ndarray
        ``(n,)`` frame levels in dB.
    state : LevelState, optional
        The state returned for the previous block; None at the start of a take.

    Returns
    -------
    levels : np.ndarray
        ``(n, LEVEL_ROWS)`` float32 in 0..1.
    state : LevelState
        The state after the last frame.

    Examples
    --------
    >>> lv, st = level_features(np.array([-20.0, -20.0, -50.0]))
    >>> np.round(lv[:, 0], 2).tolist(), round(st.running_peak_db, 2)
    ([1.0, 1.0, 0.5], -20.06)
    """
    state = state or LevelState()
    x = np.asarray(level_db, dtype=np.float64).reshape(-1)
    n = len(x)
    if n == 0:
        return np.zeros((0, LEVEL_ROWS), np.float32), state
    decay = LEVEL_DECAY_DB_PER_S * HOP_S
    # peak hold with linear decay: peak[i] = max(x[i], peak[i-1] - decay), as a running maximum
    ramp = decay * np.arange(1, n + 1)
    start = state.running_peak_db if np.isfinite(state.running_peak_db) else -1e9
    peak = np.maximum(np.maximum.accumulate(x + ramp), start) - ramp
    rel = np.clip(x - peak, -LEVEL_RANGE_DB, 0.0) / LEVEL_RANGE_DB + 1.0
    history = state.recent_db if len(state.recent_db) else np.full(LEVEL_SLOPE_FRAMES, x[0])
    joined = np.concatenate([history[-LEVEL_SLOPE_FRAMES:], x])
    slope = np.clip(x - joined[:n], -LEVEL_SLOPE_RANGE_DB, LEVEL_SLOPE_RANGE_DB) / (2 * LEVEL_SLOPE_RANGE_DB) + 0.5
    out = np.stack([rel, slope], axis=1).astype(np.float32)
    return out, LevelState(float(peak[-1]), joined[-LEVEL_SLOPE_FRAMES:].copy())


def model_inputs(features: np.ndarray, levels: np.ndarray | None = None) -> np.ndarray:
    """Model input ``(n, CONTEXT_FRAMES [+ LEVEL_ROWS], N_INPUT_BINS)``: each frame's spectral
    context (:func:`context_frames`) and, when ``levels`` is given, its level rows repeated across
    the bins.
    """
    return _with_level_rows(context_frames(features), levels)


def _with_level_rows(ctx: np.ndarray, levels: np.ndarray | None) -> np.ndarray:
    """Spectral contexts ``(n, CONTEXT_FRAMES, bins)`` with each frame's level rows appended."""
    if levels is None:
        return ctx
    rows = np.repeat(np.asarray(levels, np.float32)[:, :, None], ctx.shape[2], axis=2)
    return np.concatenate([ctx, rows], axis=1)


def context_frames(features: np.ndarray) -> np.ndarray:
    """``(n, CONTEXT_FRAMES, bins)``: each frame with its neighbours (edges repeat the end frame)."""
    n = len(features)
    half = CONTEXT_FRAMES // 2
    idx = np.clip(np.arange(n)[:, None] + np.arange(-half, half + 1)[None, :], 0, max(n - 1, 0))
    return features[idx]


def voicing_hysteresis(p_voiced: np.ndarray, *, threshold: float, threshold_low: float | None = None,
                       voiced_before: bool = False) -> np.ndarray:
    """Voiced flags from voicing probabilities with hysteresis.

    A frame is voiced when ``p >= threshold``, or when ``p >= threshold_low`` and the frame before
    it was voiced (``voiced_before`` for the first frame: the state carried between blocks when
    streaming). ``threshold_low=None`` means no hysteresis.

    >>> voicing_hysteresis(np.array([0.3, 0.8, 0.3, 0.1, 0.3]), threshold=0.7, threshold_low=0.2).tolist()
    [False, True, True, False, False]
    """
    p = np.asarray(p_voiced, dtype=np.float64).reshape(-1)
    on = p >= threshold
    if threshold_low is None or threshold_low >= threshold:
        return on
    keep = p >= threshold_low
    out = np.zeros(len(p), bool)
    state = bool(voiced_before)
    for i in range(len(p)):  # sequential by nature; ~20 k frames for a 3-minute take
        state = bool(on[i]) or (state and bool(keep[i]))
        out[i] = state
    return out


def decode_pitch(logits: np.ndarray, voicing_logit: np.ndarray, *, peak_db: np.ndarray | None = None,
                 voicing_threshold: float = 0.5, voicing_threshold_low: float | None = None,
                 voiced_before: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """f0 (Hz, 0 = unvoiced) and confidence (0..1) from the model outputs.

    Parameters
    ----------
    logits : np.ndarray
        ``(n, N_PITCH_BINS)`` pitch-bin logits.
    voicing_logit : np.ndarray
        ``(n,)`` or ``(n, 1)`` voicing logits.
    peak_db : np.ndarray, optional
        Frame peak level; frames below :data:`SILENCE_DBFS` are unvoiced.
    voicing_threshold : float
        Voicing probability at or above which a frame is voiced.
    voicing_threshold_low : float, optional
        With hysteresis (see :func:`voicing_hysteresis`): the probability at or above which a frame
        stays voiced after a voiced frame. None: no hysteresis.
    voiced_before : bool
        Hysteresis state before the first frame (whether the frame before it was voiced, before
        the silence gate).
    """
    hz, conf, _ = _decode(logits, voicing_logit, peak_db=peak_db, voicing_threshold=voicing_threshold,
                          voicing_threshold_low=voicing_threshold_low, voiced_before=voiced_before)
    return hz, conf


def _decode(logits, voicing_logit, *, peak_db, voicing_threshold, voicing_threshold_low, voiced_before):
    """:func:`decode_pitch` plus the hysteresis state after the last frame (before the silence gate),
    which the streaming mode carries to its next block.
    """
    logits = np.asarray(logits, dtype=np.float32)
    n = len(logits)
    if n == 0:
        return np.zeros(0, np.float32), np.zeros(0, np.float32), bool(voiced_before)
    best = logits.argmax(axis=1)
    offs = np.arange(-_DECODE_HALF_WIDTH, _DECODE_HALF_WIDTH + 1)
    idx = np.clip(best[:, None] + offs[None, :], 0, N_PITCH_BINS - 1)
    local = np.take_along_axis(logits, idx, axis=1)
    w = np.exp(local - local.max(axis=1, keepdims=True))
    # bins clipped at the ends of the range count once only
    w = np.where((best[:, None] + offs[None, :] >= 0) & (best[:, None] + offs[None, :] < N_PITCH_BINS), w, 0.0)
    frac_bin = (w * idx).sum(axis=1) / w.sum(axis=1)
    hz = pitch_bin_hz(frac_bin)
    p_voiced = 1.0 / (1.0 + np.exp(-np.asarray(voicing_logit, dtype=np.float64).reshape(n)))
    voiced = voicing_hysteresis(p_voiced, threshold=voicing_threshold, threshold_low=voicing_threshold_low,
                                voiced_before=voiced_before)
    state_after = bool(voiced[-1])
    if peak_db is not None:
        voiced &= np.asarray(peak_db) > SILENCE_DBFS
    return np.where(voiced, hz, 0.0).astype(np.float32), p_voiced.astype(np.float32), state_after


def default_model_path() -> Path:
    """The committed int8 pitch model: ``models_dir()/pitch/melisma_pitch_int8.tflite``."""
    from ..models_runtime import models_dir

    return models_dir() / "pitch" / MODEL_FILE


def _as_mono_16k(y: np.ndarray, sr: int) -> np.ndarray:
    y = np.asarray(y, dtype=np.float32)
    if y.ndim == 2:
        y = y.mean(axis=0)
    if y.ndim != 1:
        raise AnalysisError(f"audio must be (samples,) or (channels, samples), got shape {y.shape}")
    if sr <= 0:
        raise AnalysisError(f"sample rate must be positive, got sr={sr}")
    if sr != SR:
        from ..audio_io import resample

        y = resample(y, orig_sr=sr, target_sr=SR)
    return np.ascontiguousarray(y, dtype=np.float32)


@dataclass
class TflitePitchTracker:
    """f0 tracker running the int8 TFLite pitch model (see the module docstring).

    Parameters
    ----------
    model_path : str or Path, optional
        The ``.tflite`` file; default :func:`default_model_path`.
    num_threads : int
        Interpreter threads (1: one core).
    runtime : str, optional
        Force 'tflite_runtime' or 'ai_edge_litert' (see :func:`melisma.models_runtime.load_interpreter`).
    voicing_threshold : float
        Voicing probability at or above which a frame counts as voiced.
    voicing_threshold_low : float, optional
        Hysteresis: after a voiced frame, the probability at or above which the next frame stays
        voiced (None: no hysteresis). The defaults were chosen on generated validation clips
        (``models/pitch/MODEL_CARD.md``).
    batch_frames : int
        Frames per interpreter call (a fixed batch: the last one is padded, so the
        interpreter is never re-allocated).

    The model is loaded on the first :meth:`track` call; a missing or corrupt file raises
    :class:`melisma.errors.ModelError`.
    """

    model_path: str | Path | None = None
    num_threads: int = 1
    runtime: str | None = None
    voicing_threshold: float = VOICING_THRESHOLD
    voicing_threshold_low: float | None = VOICING_THRESHOLD_LOW
    batch_frames: int = 256
    name: str = field(default="tflite-pitch", init=False)
    _model: object = field(default=None, init=False, repr=False)

    @property
    def model(self):
        """The loaded :class:`melisma.models_runtime.TfliteModel`."""
        if self._model is None:
            from ..models_runtime import TfliteModel

            self._model = TfliteModel(self.model_path or default_model_path(), num_threads=self.num_threads,
                                      runtime=self.runtime)
            rows = (CONTEXT_FRAMES, CONTEXT_FRAMES + LEVEL_ROWS)
            shape = tuple(self._model.input_shape[1:])
            if len(shape) != 2 or shape[0] not in rows or shape[1] != N_INPUT_BINS:
                from ..errors import ModelError

                raise ModelError(f"{self._model.path} takes input {self._model.input_shape}; the pitch tracker "
                                 f"needs (batch, {rows[0]} or {rows[1]}, {N_INPUT_BINS}): is it the pitch model?")
        return self._model

    @property
    def uses_level(self) -> bool:
        """Whether the model takes the level rows (input ``(batch, 5, 128)``) besides the spectra."""
        return self.model.input_shape[1] == CONTEXT_FRAMES + LEVEL_ROWS

    def raw_outputs(self, features: np.ndarray, level_db: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Model logits ``(n, N_PITCH_BINS)`` and voicing logits ``(n,)`` for spectrogram features
        ``(n, bins)`` and frame levels ``(n,)`` (both from :func:`spectrogram_features`; the levels
        are needed by a model that takes level rows).
        """
        levels = None
        if self.uses_level:
            if level_db is None:
                raise AnalysisError("this pitch model takes level rows: pass level_db from spectrogram_features")
            levels, _ = level_features(level_db)
        return self.predict_context(model_inputs(features, levels))

    def predict_context(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Model outputs for context-stacked inputs ``(n, CONTEXT_FRAMES, bins)``, in fixed-size batches."""
        n = len(x)
        m = self.model
        logits = np.zeros((n, N_PITCH_BINS), np.float32)
        voicing = np.zeros(n, np.float32)
        b = self.batch_frames
        for c0 in range(0, n, b):
            chunk = x[c0 : c0 + b]
            k = len(chunk)
            if k < b:
                chunk = np.concatenate([chunk, np.zeros((b - k, *chunk.shape[1:]), np.float32)])
            out = m.predict_dict(chunk)
            logits[c0 : c0 + k] = out["pitch_logits"][:k]
            voicing[c0 : c0 + k] = out["voicing_logit"][:k].reshape(-1)
        return logits, voicing

    def track(self, y: np.ndarray, *, sr: int) -> PitchTrack:
        """f0 track (hop 10 ms) of a mostly monophonic vocal at any sample rate."""
        x = _as_mono_16k(y, sr)
        feats, peak_db, level_db = spectrogram_features(x)
        if len(feats) == 0:
            return PitchTrack(HOP_S, np.zeros(0), np.zeros(0), self.name)
        logits, voicing = self.raw_outputs(feats, level_db)
        hz, conf = decode_pitch(logits, voicing, peak_db=peak_db, voicing_threshold=self.voicing_threshold,
                                voicing_threshold_low=self.voicing_threshold_low)
        return PitchTrack(HOP_S, hz, conf, self.name)


class StreamingPitchModel:
    """Live pitch tracking on short blocks with bounded latency (for monitoring).

    Feed 16 kHz mono blocks of any length to :meth:`process`; it returns the frames that became
    final (a :class:`PitchTrack` fragment whose first frame is number :attr:`frames_done` before
    the call). A frame centred on sample ``s`` is final once sample ``s + N_FFT/2 + HOP_LENGTH``
    has arrived (its own window plus the next frame's context), so the algorithmic latency is
    :attr:`latency_s` = 42 ms plus up to one block. The frames are identical to the offline
    :meth:`TflitePitchTracker.track` frames (after :meth:`flush`, which pads the end as offline
    tracking does).

    Examples
    --------
    >>> stream = StreamingPitchModel()  # doctest: +SKIP
    >>> parts = [stream.process(block) for block in np.split(y, 50)] + [stream.flush()]  # doctest: +SKIP
    """

    def __init__(self, tracker: TflitePitchTracker | None = None) -> None:
        self.tracker = tracker or TflitePitchTracker(batch_frames=16)
        self.reset()

    @property
    def latency_s(self) -> float:
        """Algorithmic latency of a frame, not counting block buffering: half a window plus one hop."""
        return (N_FFT // 2 + HOP_LENGTH) / SR

    def reset(self) -> None:
        self._buf = np.zeros(N_FFT // 2, np.float32)  # left padding, as offline
        self._buf_start = -(N_FFT // 2)  # sample index of _buf[0]
        self._received = 0
        self._feats = np.zeros((0, N_INPUT_BINS), np.float32)  # features of frames >= frames_done - 1
        self._peaks = np.zeros(0, np.float32)
        self._levels = np.zeros((0, LEVEL_ROWS), np.float32)  # level rows of the frames in _feats
        self._level_state = LevelState()
        self._feat_first = 0  # frame number of _feats[0]
        self._voiced_before = False  # voicing hysteresis state after the last emitted frame
        self.frames_done = 0

    def _compute_features(self, upto_frame: int) -> None:
        """Features of frames up to (not including) ``upto_frame`` whose windows are complete."""
        have = self._feat_first + len(self._feats)
        n_new = upto_frame - have
        if n_new <= 0:
            return
        first_sample = have * HOP_LENGTH - N_FFT // 2 - self._buf_start
        f, p, lv = _features_from_frames(_frames(self._buf, n_new, first_sample))
        levels, self._level_state = level_features(lv, state=self._level_state)
        self._feats = np.concatenate([self._feats, f])
        self._peaks = np.concatenate([self._peaks, p])
        self._levels = np.concatenate([self._levels, levels])

    def _emit(self, upto_frame: int, *, final: bool = False) -> PitchTrack:
        start = self.frames_done
        n = upto_frame - start
        if n <= 0:
            return PitchTrack(HOP_S, np.zeros(0), np.zeros(0), self.tracker.name)
        # context for frames start..upto-1 needs features start-1..upto (edges repeat)
        lo = start - self._feat_first
        feats = self._feats
        left = feats[lo - 1 : lo] if lo >= 1 else feats[lo : lo + 1]
        right_idx = lo + n
        right = feats[right_idx : right_idx + 1] if right_idx < len(feats) else feats[right_idx - 1 : right_idx]
        block = np.concatenate([left, feats[lo : lo + n], right])
        t = self.tracker
        ctx = _with_level_rows(context_frames(block)[1:-1], self._levels[lo : lo + n] if t.uses_level else None)
        logits, voicing = t.predict_context(ctx)
        hz, conf, self._voiced_before = _decode(
            logits, voicing, peak_db=self._peaks[lo : lo + n], voicing_threshold=t.voicing_threshold,
            voicing_threshold_low=t.voicing_threshold_low, voiced_before=self._voiced_before)
        self.frames_done = upto_frame
        # keep one frame of left context; drop consumed features and audio
        keep_from = max(0, upto_frame - 1 - self._feat_first)
        self._feats = self._feats[keep_from:]
        self._peaks = self._peaks[keep_from:]
        self._levels = self._levels[keep_from:]
        self._feat_first += keep_from
        next_first_sample = (self._feat_first + len(self._feats)) * HOP_LENGTH - N_FFT // 2
        drop = max(0, next_first_sample - self._buf_start)
        if drop and not final:
            self._buf = self._buf[drop:]
            self._buf_start += drop
        return PitchTrack(HOP_S, hz, conf, self.tracker.name)

    def process(self, block: np.ndarray) -> PitchTrack:
        """Add a block of 16 kHz mono samples; returns the newly final frames."""
        block = np.asarray(block, dtype=np.float32).reshape(-1)
        self._buf = np.concatenate([self._buf, block])
        self._received += len(block)
        # frame j's window ends at sample j*HOP + N_FFT/2; it is final once frame j+1's window is in
        complete = (self._received - N_FFT // 2) // HOP_LENGTH + 1 if self._received >= N_FFT // 2 else 0
        self._compute_features(complete)
        return self._emit(max(self.frames_done, complete - 1))

    def flush(self) -> PitchTrack:
        """Emit the remaining frames (the end of the take), padding with silence as offline does."""
        total = int(np.ceil(self._received / HOP_LENGTH))
        pad = total * HOP_LENGTH + N_FFT - (len(self._buf) + self._buf_start + N_FFT // 2)
        self._buf = np.concatenate([self._buf, np.zeros(max(0, pad) + N_FFT, np.float32)])
        self._compute_features(total)
        out = self._emit(total, final=True)
        return out
