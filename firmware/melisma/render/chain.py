"""The vocal chain: corrective EQ, de-esser, compressor, tonal EQ, reverb and delay.

:func:`build_vocal_chain` turns :class:`melisma.semantic.MixSettings` plus the analysis of the
take (and of the backing, if given) into a :class:`~melisma.render.stages.Chain` and a list of
plain-language explanations for the mix report. Order and why:

1. de-esser (first, so the compressor neither reacts to esses nor has its threshold, measured
   on sung frames, thrown off by them; the EQ after it barely touches 2-10 kHz),
   then the bandwidth extension (:mod:`melisma.render.exciter`: the 8-16 kHz band a phone cut,
   rebuilt on sung sounds only, so that the air slider has something to move),
2. high-pass + mud cut (corrective, from the take's spectral balance; + a small presence lift
   when the backing crowds 2-5 kHz),
3. compressor + make-up gain (threshold from the loud phrases' level: typical vocal practice is
   3:1-4:1 and 3-6 dB of gain reduction on loud phrases),
4. tonal EQ (style tilt + warmth/air sliders), after the compressor so it does not change how
   hard the compressor works,
5. dry + reverb (with pre-delay) + tempo-synced echo, summed in stereo.

Stages 2-4 are one pedalboard call (one pass over the audio).

Input is the cleaned, aligned mono vocal; output is ``(2, n)`` float32 with the same ``n``:
reverb and delay tails past the end of the input are cut (the pipeline pads the vocal or cuts
the mix at the backing's end). The chain does not set the vocal's level against the backing;
the balance stage does that from ``settings.vocal_to_backing_lu``. For a whole take use
:func:`render_vocal_chain`, which streams the chain in blocks (same result, far less memory).

Filters, compressor, reverb and delay are pedalboard's; only the de-esser is ours (pedalboard
has none): split-band gain reduction, with scipy filters for the band split (Linkwitz-Riley,
so the parts sum to an all-pass) and the detector (Butterworth band-pass).

Examples
--------
>>> import numpy as np
>>> from melisma.semantic import resolve_settings
>>> from melisma.analysis.voice import analyze_voice
>>> from melisma.render.chain import build_vocal_chain
>>> sr = 48000
>>> t = np.arange(2 * sr) / sr
>>> vocal = (0.2 * np.sin(2 * np.pi * 220 * t) * (t < 1.5)).astype(np.float32)
>>> chain, why = build_vocal_chain(resolve_settings("cpop"), analyze_voice(vocal, sr=sr), sr=sr)
>>> chain(vocal, sr).shape
(2, 96000)
>>> [w["stage"] for w in why][:3]
['deesser', 'bandwidth', 'highpass']
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .. import dsp
from ..analysis.voice import sibilance_allpass_sos, sibilance_band_sos, sibilance_detector_sos
from ..errors import RenderError
from ..semantic import DeEsserSettings, DelaySettings, MixSettings
from .exciter import build_bandwidth_extension
from .lift import KEYED_PEAK, SibilanceKeyedEQ, keyed_bands
from .stages import Chain, PedalboardStage, Stage

#: High-pass corner for a vocal (below the lowest sung fundamentals, above handling rumble).
HIGHPASS_HZ = 80.0
#: Raised corner when 40-70 Hz (below any sung note) holds more than RUMBLE_LIMIT_DB of the
#: energy: handling noise, wind, traffic.
HIGHPASS_RUMBLE_HZ = 110.0
RUMBLE_LIMIT_DB = -25.0
#: Mud: the 200-500 Hz band is cut when it exceeds the 0.5-2 kHz band by more than this (dB).
#: A heuristic starting point, to be tuned on real takes.
MUD_ALLOWANCE_DB = 4.0
MUD_FREQ_HZ = 300.0
MAX_MUD_CUT_DB = 3.0
#: How much of the corrective EQ's energy change the compressor's detector sees (empirical).
EQ_SHIFT_TO_DETECTOR = 0.75
NOTE_BEATS = {"1/4": 1.0, "1/8": 0.5, "1/8d": 0.75, "1/16": 0.25, "1/2": 2.0, "1/4d": 1.5}


@dataclass
class DeEsser(Stage):
    """Split-band de-esser: only the sibilance band is turned down, and only while it is loud.

    The level of the sibilance band ``lo_hz``...``hi_hz`` (Butterworth band-pass, mean square
    over 2 ms blocks, smoothed with ``attack_ms``/``release_ms``) above ``threshold_db`` (dBFS)
    gives a reduction of ``(level - threshold) * (1 - 1/ratio)`` dB,
    capped at ``max_reduction_db``. The band is split off with Linkwitz-Riley (LR4) filters
    placed a little outside it, and the output is ``allpass(x) - (1 - g) * band``: low + band +
    high of the LR split with the band scaled by ``g``. Because the LR parts are in phase, the
    reduction is the full ``g`` across the band and nothing outside it changes in level (a plain
    band-pass subtracted from ``x`` would leave its phase-shifted edges barely reduced). When
    no reduction is needed the output is the input through a flat-magnitude all-pass. The gain
    is computed per block from past blocks only and interpolated per sample, so streaming with
    ``reset=False`` gives the same result as one call.

    Examples
    --------
    >>> from scipy import signal
    >>> sr = 48000
    >>> rng = np.random.default_rng(0)
    >>> hiss = signal.sosfilt(signal.butter(4, [6000, 8000], "bandpass", fs=sr, output="sos"),
    ...                       rng.standard_normal(sr)).astype(np.float32)
    >>> y = DeEsser(lo_hz=6000, hi_hz=8000, threshold_db=-40.0, max_reduction_db=6.0)(hiss, sr)
    >>> bool(np.std(y) < 0.6 * np.std(hiss))
    True
    """

    lo_hz: float = 5000.0
    hi_hz: float = 9000.0
    threshold_db: float = -30.0
    max_reduction_db: float = 8.0
    attack_ms: float = 1.0
    release_ms: float = 60.0
    ratio: float = 4.0
    block_ms: float = 2.0
    _sos: Any = field(default=None, init=False, repr=False)
    _sos_key: Any = field(default=None, init=False, repr=False)
    _zi: Any = field(default=None, init=False, repr=False)
    _zi_ap: Any = field(default=None, init=False, repr=False)
    _zi_det: Any = field(default=None, init=False, repr=False)
    _pos: int = field(default=0, init=False, repr=False)
    _acc: float = field(default=0.0, init=False, repr=False)
    _env_db: float = field(default=-120.0, init=False, repr=False)
    _gains: list = field(default_factory=lambda: [1.0, 1.0], init=False, repr=False)  # last two blocks

    def __post_init__(self) -> None:
        if not 0 < self.lo_hz < self.hi_hz:
            raise RenderError(f"DeEsser: need 0 < lo_hz < hi_hz, got lo_hz={self.lo_hz}, hi_hz={self.hi_hz}")
        if self.ratio < 1 or self.max_reduction_db < 0 or self.attack_ms <= 0 or self.release_ms <= 0:
            raise RenderError(f"DeEsser: need ratio >= 1, max_reduction_db >= 0 and positive times, got "
                              f"ratio={self.ratio}, max_reduction_db={self.max_reduction_db}, "
                              f"attack_ms={self.attack_ms}, release_ms={self.release_ms}")

    def reset(self) -> None:
        self._zi = None
        self._zi_ap = None
        self._zi_det = None
        self._pos = 0
        self._acc = 0.0
        self._env_db = -120.0
        self._gains = [1.0, 1.0]

    def _design(self, sr: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        hi = min(self.hi_hz, 0.45 * sr)
        key = (self.lo_hz, hi, sr)
        if self._sos_key != key:
            if self.lo_hz >= hi:
                raise RenderError(f"DeEsser: band {self.lo_hz}-{self.hi_hz} Hz is above Nyquist for sr={sr}")
            self._sos = (sibilance_band_sos(self.lo_hz, hi, sr=sr), sibilance_allpass_sos(self.lo_hz, hi, sr=sr),
                         sibilance_detector_sos(self.lo_hz, hi, sr=sr))
            self._sos_key = key
        return self._sos

    def process(self, audio: np.ndarray, sr: int) -> np.ndarray:
        sos_band, sos_ap, sos_det = self._design(sr)
        x = audio if audio.ndim == 2 else audio[None, :]
        if self._zi is None or self._zi.shape[1] != x.shape[0]:
            self._zi = np.zeros((sos_band.shape[0], x.shape[0], 2), np.float32)
            self._zi_ap = np.zeros((sos_ap.shape[0], x.shape[0], 2), np.float32)
            self._zi_det = np.zeros((sos_det.shape[0], 1, 2), np.float32)
        # Detect on the channels' mean: one gain for all channels keeps the stereo image.
        mono = x if x.shape[0] == 1 else x.mean(axis=0, keepdims=True)
        det, self._zi_det = dsp.sosfilt(sos_det.astype(np.float32), mono, self._zi_det)
        band, self._zi = dsp.sosfilt(sos_band.astype(np.float32), x, self._zi)
        x, self._zi_ap = dsp.sosfilt(sos_ap.astype(np.float32), x, self._zi_ap)
        band = band.astype(np.float32, copy=False)
        x = x.astype(np.float32, copy=False)
        n = x.shape[1]
        if n == 0:
            return audio
        det = det[0].astype(np.float32, copy=False)
        power = det * det

        block = max(1, int(round(sr * self.block_ms / 1000.0)))
        pos0 = self._pos  # stream position within the current block at this call's first sample
        # Blocks completed in this call: the first one is finished by (block - pos0) samples.
        ends = np.arange(block - pos0, n + 1, block)
        if ends.size:
            starts = np.concatenate(([0], ends[:-1]))
            sums = np.add.reduceat(power, starts).astype(np.float64)
            sums[0] += self._acc
            # reduceat's last slice runs to the end of the array; trim it to its block.
            rest = float(power[ends[-1]:].sum(dtype=np.float64))
            sums[-1] -= rest
            levels = 10.0 * np.log10(np.maximum(sums / block, 1e-20))
            self._acc, self._pos = rest, n - int(ends[-1])
        else:
            levels = np.zeros(0)
            self._acc += float(power.sum(dtype=np.float64))
            self._pos += n
        a_att = math.exp(-block / (sr * self.attack_ms / 1000.0))
        a_rel = math.exp(-block / (sr * self.release_ms / 1000.0))
        env = self._env_db
        envs = np.empty(levels.size)
        for i, level in enumerate(levels.tolist()):  # attack/release recursion: inherently serial
            coef = a_att if level > env else a_rel
            env = coef * env + (1.0 - coef) * level
            envs[i] = env
        self._env_db = env
        reduction_db = np.minimum(self.max_reduction_db, np.maximum(0.0, (envs - self.threshold_db) * (1.0 - 1.0 / self.ratio)))
        # Linear gains per block; interpolating those per sample is cheaper than exp per sample.
        g_hist = np.concatenate((self._gains, 10.0 ** (-reduction_db / 20.0))).astype(np.float32)
        self._gains = [float(v) for v in g_hist[-2:]]
        if np.all(g_hist == 1.0):
            return x if audio.ndim == 2 else x[0]  # nothing to reduce in this call

        # A sample at offset o of block k (counted from this call's first block) gets a gain
        # ramping from that of block k-2 to that of block k-1, both already complete: causal,
        # and the same whether the stream comes in one call or many.
        n_blocks = (pos0 + n + block - 1) // block
        ramp = (np.arange(block, dtype=np.float32) / np.float32(block))[None, :]
        g0, g1 = g_hist[:n_blocks, None], g_hist[1:n_blocks + 1, None]
        cut = np.float32(1.0) - (g0 + (g1 - g0) * ramp).reshape(-1)[pos0:pos0 + n]
        band *= cut[None, :]
        x -= band
        return x if audio.ndim == 2 else x[0]


def _delay_samples(seconds: float, sr: int) -> int:
    """How many whole samples pedalboard.Delay delays by at ``sr`` (it truncates fractions): probed
    with an impulse, so the numpy delay lines of :class:`Space` match it sample for sample.
    """
    import pedalboard

    guess = int(round(seconds * sr))
    impulse = np.zeros((1, guess + 4), np.float32)
    impulse[0, 0] = 1.0
    probe = pedalboard.Delay(delay_seconds=seconds, feedback=0.0, mix=1.0)(impulse, sr, reset=True)
    hits = np.flatnonzero(probe[0])
    return int(hits[0]) if hits.size else guess


class Space(Stage):
    """Dry vocal + reverb (after a pre-delay) + echo, summed; mono in, ``(2, n)`` out, same ``n``.

    The reverb runs on a stereo copy (Freeverb decorrelates the two sides, ``width`` sets how
    much); the echo runs once on the mono signal and sits in the centre. Tails that would ring
    past the end of the input are cut: the output keeps the input's length.

    Examples
    --------
    >>> y = Space(reverb={"room_size": 0.5, "wet_level": 0.2})(np.ones(480, np.float32), 48000)
    >>> y.shape, y.dtype.name
    ((2, 480), 'float32')
    """

    def __init__(self, reverb: dict[str, Any] | None = None, delay_ms: float = 0.0, delay_feedback: float = 0.0,
                 delay_mix: float = 0.0):
        import pedalboard

        self.reverb = dict(reverb or {})
        self.delay_ms, self.delay_feedback, self.delay_mix = float(delay_ms), float(delay_feedback), float(delay_mix)
        wet = float(self.reverb.get("wet_level", 0.0))
        self._predelay_s = max(0.0, float(self.reverb.get("predelay_ms", 0.0))) / 1000.0
        self._reverb = None
        if wet > 0:
            self._reverb = pedalboard.Reverb(room_size=float(self.reverb.get("room_size", 0.5)),
                                             damping=float(self.reverb.get("damping", 0.5)), wet_level=wet,
                                             dry_level=0.0, width=float(self.reverb.get("width", 1.0)))
        self._echo = None  # the echo's filters; its feedback delay line runs in numpy (_echo_delay)
        self._echo_feedback = np.float32(min(max(self.delay_feedback, 0.0), 0.9))
        if self.delay_mix > 0 and self.delay_ms > 0:
            self._echo = pedalboard.Pedalboard([
                # Darker, thinner echoes stay behind the dry voice.
                pedalboard.HighpassFilter(cutoff_frequency_hz=300.0),
                pedalboard.LowpassFilter(cutoff_frequency_hz=6000.0),
                pedalboard.Gain(gain_db=20.0 * math.log10(self.delay_mix)),
            ])
        self._predelay_key: tuple[int, int] | None = None  # (sr, delay in samples)
        self._predelay_line = np.zeros(0, np.float32)
        self._echo_key: tuple[int, int] | None = None  # (sr, echo delay in samples)
        self._echo_line = np.zeros(0, np.float32)  # the last delay's worth of the line's input
        self._fresh = True

    def reset(self) -> None:
        self._fresh = True

    def _predelay_samples(self, sr: int) -> int:
        """The pre-delay in whole samples, as pedalboard.Delay makes it (probed once per rate)."""
        if self._predelay_key is None or self._predelay_key[0] != sr:
            self._predelay_key = (sr, _delay_samples(self._predelay_s, sr) if self._predelay_s > 0 else 0)
        return self._predelay_key[1]

    def _echo_samples(self, sr: int) -> int:
        """The echo's delay in whole samples, as pedalboard.Delay makes it (probed once per rate)."""
        if self._echo_key is None or self._echo_key[0] != sr:
            self._echo_key = (sr, max(1, _delay_samples(self.delay_ms / 1000.0, sr)))
        return self._echo_key[1]

    def _echo_delay(self, mono: np.ndarray, sr: int) -> np.ndarray:
        """The echo's feedback delay line over ``mono`` (samples,), streaming: ``y[n] = w[n - D]``,
        ``w[n] = x[n] + feedback * y[n]``, what pedalboard.Delay(mix=1) computes, to the bit, but a
        delay's worth of samples at a time (the line's output over the next D samples is already
        known), so a 3-minute take costs ~10 ms instead of ~70.
        """
        d = self._echo_samples(sr)
        if self._fresh or self._echo_line.shape != (d,):
            self._echo_line = np.zeros(d, np.float32)
        m = mono.shape[-1]
        line = np.empty(d + m, np.float32)  # line[i]: the line's input at sample i - d of this call
        line[:d] = self._echo_line
        out = np.empty(m, np.float32)
        for a in range(0, m, d):
            b = min(a + d, m)
            out[a:b] = line[a:b]
            np.multiply(out[a:b], self._echo_feedback, out=line[d + a : d + b])
            line[d + a : d + b] += mono[a:b]
        self._echo_line = line[m:].copy()
        return out

    def _predelay(self, mono: np.ndarray, sr: int) -> np.ndarray:
        """``mono`` ((samples,) or (channels, samples)) delayed by the pre-delay, streaming."""
        # A plain delay line (the reverb is linear and time-invariant, so delaying its input in
        # numpy is the pedalboard.Delay it replaces, sample for sample, at a fraction of the cost).
        samples = self._predelay_samples(sr)
        if samples == 0:
            return mono
        shape = (*mono.shape[:-1], samples)
        if self._fresh or self._predelay_line.shape != shape:
            self._predelay_line = np.zeros(shape, np.float32)
        joined = np.concatenate([self._predelay_line, mono], axis=-1)
        self._predelay_line = joined[..., joined.shape[-1] - samples:].copy()
        return joined[..., :mono.shape[-1]]

    def process(self, audio: np.ndarray, sr: int) -> np.ndarray:
        mono = audio if audio.ndim == 1 else audio.mean(axis=0)
        mono = np.asarray(mono, dtype=np.float32)
        out = np.stack([mono, mono]) if audio.ndim == 1 or audio.shape[0] != 2 else audio.astype(np.float32, copy=True)
        if self._reverb is not None:
            if audio.ndim == 1 or audio.shape[0] != 2:
                send = self._predelay(mono, sr)
                send = np.stack([send, send])
            else:
                send = self._predelay(out, sr)
            out += self._reverb(send, sr, reset=self._fresh)
        if self._echo is not None:
            out += self._echo(self._echo_delay(mono, sr)[None, :], sr, reset=self._fresh)
        self._fresh = False
        return out

    def describe(self) -> dict[str, Any]:
        return {"stage": self.name, "reverb": dict(self.reverb), "delay_ms": self.delay_ms,
                "delay_feedback": self.delay_feedback, "delay_mix": self.delay_mix}


def _eq_plugin(band: dict[str, Any]) -> list[Any]:
    import pedalboard

    kind, freq = band["type"], float(band["freq_hz"])
    q = float(band["q"])
    gain = float(band["gain_db"])
    if kind == "highpass":
        # pedalboard's high-pass is first order; two in series give 12 dB/octave.
        return [pedalboard.HighpassFilter(cutoff_frequency_hz=freq), pedalboard.HighpassFilter(cutoff_frequency_hz=freq)]
    if kind == "low_shelf":
        return [pedalboard.LowShelfFilter(cutoff_frequency_hz=freq, gain_db=gain, q=q)]
    if kind == "high_shelf":
        return [pedalboard.HighShelfFilter(cutoff_frequency_hz=freq, gain_db=gain, q=q)]
    if kind == "peak":
        return [pedalboard.PeakFilter(cutoff_frequency_hz=freq, gain_db=gain, q=q)]
    raise RenderError(f"unknown EQ band type {kind!r}; use one of ['highpass', 'low_shelf', 'peak', 'high_shelf']")


def eq_response_db(band: dict[str, Any], freqs_hz: np.ndarray) -> np.ndarray:
    """Magnitude response (dB) of one EQ band as :func:`_eq_plugin` builds it (analog prototypes:
    first-order high-passes, RBJ-cookbook peak and shelves, which pedalboard/JUCE follow).
    """
    f = np.asarray(freqs_hz, dtype=np.float64)
    fc, q = float(band["freq_hz"]), float(band["q"])
    s = 1j * f / fc
    a = 10.0 ** (float(band["gain_db"]) / 40.0)
    kind = band["type"]
    if kind == "highpass":
        h = (s / (s + 1.0)) ** 2
    elif kind in ("peak", KEYED_PEAK):  # a keyed peak: its curve on sung sounds (none on esses)
        h = (s * s + s * a / q + 1.0) / (s * s + s / (a * q) + 1.0)
    elif kind == "low_shelf":
        h = a * (s * s + np.sqrt(a) / q * s + a) / (a * s * s + np.sqrt(a) / q * s + 1.0)
    elif kind == "high_shelf":
        h = a * (a * s * s + np.sqrt(a) / q * s + 1.0) / (s * s + np.sqrt(a) / q * s + a)
    else:
        raise RenderError(f"unknown EQ band type {kind!r}; use one of ['highpass', 'low_shelf', 'peak', 'high_shelf']")
    return 20.0 * np.log10(np.maximum(np.abs(h), 1e-12))


def eq_level_change_db(bands: list[dict[str, Any]], spectrum: dict[str, list[float]] | None) -> float:
    """Level change (dB) the EQ ``bands`` make to a signal with this long-term ``spectrum``
    (``{"centre_hz": [...], "level_db": [...]}`` from :func:`analyze_voice`); 0 if unknown.

    >>> round(eq_level_change_db([{"type": "peak", "freq_hz": 1000.0, "gain_db": 6.0, "q": 1.0}],
    ...                          {"centre_hz": [1000.0], "level_db": [-20.0]}), 1)
    6.0
    """
    if not spectrum or not spectrum.get("centre_hz") or not bands:
        return 0.0
    freqs = np.asarray(spectrum["centre_hz"], dtype=np.float64)
    power = 10.0 ** (np.asarray(spectrum["level_db"], dtype=np.float64) / 10.0)
    gain_db = sum(eq_response_db(b, freqs) for b in bands)
    return float(10.0 * np.log10(np.sum(power * 10.0 ** (gain_db / 10.0)) / max(np.sum(power), 1e-30)))


def _delay_ms(delay: DelaySettings, backing: dict[str, Any] | None) -> tuple[float, str]:
    bpm = (backing or {}).get("tempo_bpm")
    note = delay.note
    if bpm and note in NOTE_BEATS:
        return 60000.0 / float(bpm) * NOTE_BEATS[note], f"{note} note at {float(bpm):.0f} BPM (the backing's tempo)"
    ms = float(delay.time_ms)
    return ms, "fixed time (the backing's tempo is unknown)"


def _fmt(value: float | None, unit: str = " dB") -> str:
    return "unknown" if value is None else f"{value:.1f}{unit}"


def build_vocal_chain(settings: MixSettings, voice: dict[str, Any], backing: dict[str, Any] | None = None,
                      *, sr: int) -> tuple[Chain, list[dict[str, Any]]]:
    """Build the dry-to-wet vocal chain for one take, and say why each setting was chosen.

    Parameters
    ----------
    settings : MixSettings
        From :func:`melisma.semantic.resolve_settings` (or a plan's saved settings).
    voice : dict
        :func:`melisma.analysis.voice.analyze_voice` of the take.
    backing : dict, optional
        :func:`melisma.analysis.voice.analyze_backing` of the backing (tempo for the delay,
        spectral balance for the presence decision).
    sr : int
        Sample rate the chain will run at.

    Returns
    -------
    (Chain, list of dict)
        The chain (mono in, ``(2, n)`` float32 out, same length) and one explanation dict per
        decision: ``{"stage": ..., <numbers with units>..., "why": "..."}``.
    """
    if not isinstance(settings, MixSettings):
        raise RenderError(f"settings must be a MixSettings, got {type(settings).__name__}")
    if sr <= 0:
        raise RenderError(f"sample rate must be positive, got sr={sr}")
    why: list[dict[str, Any]] = []
    stages: list[Stage] = []
    # The de-esser comes first: the EQ below does not touch 2-10 kHz much, and the compressor
    # then neither reacts to esses nor sees a level its threshold was not measured on (the
    # analysis measures loud phrases on sung, non-sibilant frames).
    deesser = _deesser(settings.deesser, voice, why)
    if deesser is not None:
        stages.append(deesser)
    # The top octave a phone cut, rebuilt from the voice's harmonics (render/exciter.py), before the EQ.
    extender, extender_why = build_bandwidth_extension(voice, sr=sr)
    if extender is not None:
        stages.append(extender)
    why.append(extender_why)
    corrective = _corrective_eq(voice, backing, why)
    stages.append(_eq_and_dynamics(settings, voice, corrective, why))
    # The brighter slider's presence lift, keyed off on esses (render/lift.py): after the tonal EQ,
    # in the wet part, so it neither undoes the de-esser nor makes the cached dry vocal stale.
    _, keyed = keyed_bands([asdict(b) for b in settings.eq_bands])
    if keyed:
        lift = SibilanceKeyedEQ(bands=tuple({k: b[k] for k in ("freq_hz", "gain_db", "q")} for b in keyed))
        stages.append(lift)
        why.append({"stage": "keyed_lift", "bands": keyed, "sib_hz": list(lift.sib_hz),
                    "why": "the brighter lift is applied in full on sung sounds and backs off on esses "
                           "(5-7.5 kHz within 6 dB of 0.2-3 kHz), so it does not give back what the de-esser took"})
    stages.append(_space(settings, backing, why))
    why.append({"stage": "length", "why": "reverb and delay tails past the end of the take are cut; "
                                          "the output has the input's length"})
    return Chain(stages), why


def _deesser(des: DeEsserSettings, voice: dict[str, Any], why: list[dict[str, Any]]) -> DeEsser | None:
    """The de-esser set for this voice's sibilance (None when it has none), with its reason."""
    sib = voice.get("sibilance") or {}
    if not (sib.get("found") and sib.get("band_level_sibilant_db") is not None):
        why.append({"stage": "deesser", "enabled": False, "why": "no sibilant frames found in 2-10 kHz"})
        return None
    ratio = float(des.ratio)
    slope = 1.0 - 1.0 / ratio
    vowel_p95 = float(sib.get("band_level_vowel_p95_db") or -120.0)
    sib_level = float(sib["band_level_sibilant_db"])
    target = float(des.target_reduction_db)
    max_reduction = float(des.max_reduction_db)
    # Reach the target reduction on a typical ess, but never act on the vowels' own 2-10 kHz.
    threshold = des.threshold_db
    if threshold is None:
        threshold = max(vowel_p95 + 3.0, sib_level - target / slope)
    threshold = float(threshold)
    lo_hz = float(des.lo_hz or sib["lo_hz"])
    hi_hz = float(des.hi_hz or sib["hi_hz"])
    expected = float(min(max_reduction, max(0.0, (sib_level - threshold) * slope)))
    why.append({"stage": "deesser", "lo_hz": lo_hz, "hi_hz": hi_hz, "centre_hz": sib.get("centre_hz"),
                "threshold_db": round(threshold, 1), "ratio": ratio, "max_reduction_db": max_reduction,
                "expected_reduction_db": round(expected, 1),
                "why": f"this voice's sibilance centres at {sib.get('centre_hz', 0) / 1000:.1f} kHz "
                       f"({lo_hz / 1000:.1f}-{hi_hz / 1000:.1f} kHz); a typical ess is {sib.get('excess_db', 0):.0f} dB "
                       f"above the vowels' loudest level in that band; cut it by about {expected:.0f} dB"})
    return DeEsser(lo_hz=lo_hz, hi_hz=hi_hz, threshold_db=round(threshold, 2), max_reduction_db=max_reduction,
                   attack_ms=float(des.attack_ms), release_ms=float(des.release_ms), ratio=ratio)


def _corrective_eq(voice: dict[str, Any], backing: dict[str, Any] | None,
                   why: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """EQ bands from the take's spectral balance (high-pass, mud cut, presence), with their reasons."""
    balance = voice.get("spectral_balance") or {}
    rumble, mud, mid = balance.get("rumble"), balance.get("mud"), balance.get("mid")
    # Energy below 70 Hz is never voice (the lowest pop notes are ~80 Hz): a lot of it means
    # handling noise or wind, so the corner goes up; otherwise it stays below a bass's E2.
    noisy = rumble is not None and rumble > RUMBLE_LIMIT_DB
    hp_hz = HIGHPASS_RUMBLE_HZ if noisy else HIGHPASS_HZ
    corrective = [{"type": "highpass", "freq_hz": hp_hz, "gain_db": 0.0, "q": 0.7071}]
    why.append({"stage": "highpass", "freq_hz": hp_hz, "slope_db_per_octave": 12,
                "why": (f"40-70 Hz holds {rumble:.0f} dB of the energy (limit {RUMBLE_LIMIT_DB:.0f} dB): "
                        f"handling noise or wind, higher corner" if noisy
                        else "remove rumble and handling noise below the voice")})
    mud_cut = 0.0
    if mud is not None and mid is not None:
        mud_cut = round(float(np.clip(0.5 * (mud - mid - MUD_ALLOWANCE_DB), 0.0, MAX_MUD_CUT_DB)), 1)
        if mud_cut < 0.5:
            mud_cut = 0.0
    if mud_cut:
        corrective.append({"type": "peak", "freq_hz": MUD_FREQ_HZ, "gain_db": -mud_cut, "q": 1.0})
    why.append({"stage": "mud_cut", "freq_hz": MUD_FREQ_HZ, "gain_db": -mud_cut,
                "why": (f"200-500 Hz sits {mud - mid:+.1f} dB against 0.5-2 kHz "
                        f"(allowance {MUD_ALLOWANCE_DB:+.0f} dB)" if mud is not None and mid is not None
                        else "no spectral balance in the analysis")})
    if backing is not None and balance.get("presence") is not None:
        back_presence = (backing.get("spectral_balance") or {}).get("presence")
        if back_presence is not None and back_presence > balance["presence"]:
            lift = round(float(min(1.5, 0.5 * (back_presence - balance["presence"]))), 1)
            if lift >= 0.3:
                corrective.append({"type": "peak", "freq_hz": 3000.0, "gain_db": lift, "q": 1.0})
                why.append({"stage": "presence", "freq_hz": 3000.0, "gain_db": lift,
                            "why": f"the backing is {back_presence - balance['presence']:.1f} dB denser at 2-5 kHz "
                                   f"than the voice; a small lift helps the words through"})
    return corrective


def _eq_and_dynamics(settings: MixSettings, voice: dict[str, Any], corrective: list[dict[str, Any]],
                     why: list[dict[str, Any]]) -> PedalboardStage:
    """Corrective EQ, then the compressor set so loud phrases get the preset's target gain
    reduction, then the tonal EQ (style tilt and sliders): one pedalboard stage, with reasons.
    """
    import pedalboard

    comp = settings.compressor
    ratio = float(comp.ratio)
    target_gr = float(comp.target_gr_db)
    loud = voice.get("loud_phrase_detector_db")
    if loud is None and voice.get("loud_phrase_rms_db") is not None:
        loud = float(voice["loud_phrase_rms_db"]) + 3.0  # rough detector-over-RMS offset of a voice
    # The corrective EQ runs before the compressor: move the measured level by what it does to
    # this voice's long-term spectrum (a high-pass costs a low voice several dB).
    # The energy estimate overstates the change the peak-following detector sees by about a
    # quarter (measured on synthetic voices, f0 98-330 Hz), hence the factor.
    eq_shift_db = EQ_SHIFT_TO_DETECTOR * eq_level_change_db(corrective, voice.get("long_term_spectrum"))
    if loud is not None:
        loud = loud + eq_shift_db
    threshold = comp.threshold_db
    if threshold is None:
        threshold = (loud - target_gr / (1.0 - 1.0 / ratio)) if loud is not None else -24.0
    threshold = float(threshold)
    expected_gr = max(0.0, (loud - threshold) * (1.0 - 1.0 / ratio)) if loud is not None else 0.0
    quiet = voice.get("median_phrase_rms_db")
    probe = voice.get("detector_timing_ms") or {}
    timing_note = ""
    if probe and (probe.get("attack_ms"), probe.get("release_ms")) != (float(comp.attack_ms), float(comp.release_ms)):
        timing_note = (f"; the level was measured at {probe.get('attack_ms')}/{probe.get('release_ms')} ms, "
                       f"so the gain reduction may differ by a dB or so")
    # Half the gain reduction back: loud phrases end a little quieter, typical ones a little
    # louder. The balance stage sets the absolute level.
    makeup = round(0.5 * expected_gr, 1)
    attack, release = float(comp.attack_ms), float(comp.release_ms)
    why.append({"stage": "compressor", "threshold_db": round(threshold, 1), "ratio": ratio, "attack_ms": attack,
                "release_ms": release, "expected_gr_db": round(expected_gr, 1), "makeup_db": makeup,
                "why": f"loud phrases reach {_fmt(loud, ' dBFS')} at the detector; {ratio:g}:1 from "
                       f"{threshold:.1f} dBFS gives about {expected_gr:.1f} dB of gain reduction there "
                       f"(typical phrases: {_fmt(quiet, ' dBFS')} RMS)"
                       + (f"; corrective EQ moves that level {eq_shift_db:+.1f} dB" if abs(eq_shift_db) >= 0.1 else "")
                       + timing_note})
    sliders = settings.sliders or {}
    tonal, _ = keyed_bands([asdict(b) for b in settings.eq_bands])  # keyed peaks: their own stage
    why.append({"stage": "tone_eq", "bands": tonal,
                "why": f"style '{settings.style}' tilt plus warmth {sliders.get('warmth', 0.0):+.2f} "
                       f"(+ warmer, - brighter) and air {sliders.get('air', 0.0):+.2f}"})
    plugins = [p for b in corrective for p in _eq_plugin(b)]
    plugins += [pedalboard.Compressor(threshold_db=threshold, ratio=ratio, attack_ms=attack, release_ms=release),
                pedalboard.Gain(gain_db=makeup)]
    plugins += [p for b in tonal for p in _eq_plugin(b)]
    return PedalboardStage(plugins, label="EQAndDynamics",
                           params={"corrective_bands": corrective, "threshold_db": round(threshold, 2),
                                   "ratio": ratio, "attack_ms": attack, "release_ms": release,
                                   "makeup_db": makeup, "tonal_bands": tonal})


def _space(settings: MixSettings, backing: dict[str, Any] | None, why: list[dict[str, Any]]) -> Space:
    """Dry + reverb (pre-delayed) + echo on a stereo copy, with reasons."""
    sliders = settings.sliders or {}
    rev, delay = asdict(settings.reverb), settings.delay
    why.append({"stage": "reverb", **{k: rev.get(k) for k in ("room_size", "wet_level", "damping", "predelay_ms", "width")},
                "why": f"style '{settings.style}' space, reverb slider {sliders.get('reverb', 0.0):+.2f}; the "
                       f"pre-delay keeps the words' onsets clear of the reverb"})
    delay_mix = float(delay.mix)
    delay_ms, feedback = 0.0, float(np.clip(delay.feedback, 0.0, 0.9))
    if delay_mix > 0:
        delay_ms, how = _delay_ms(delay, backing)
        why.append({"stage": "delay", "time_ms": round(delay_ms, 1), "feedback": feedback, "mix": delay_mix,
                    "why": f"echo at a {how}, filtered 300 Hz-6 kHz so it sits behind the voice"})
    else:
        why.append({"stage": "delay", "mix": 0.0, "why": f"style '{settings.style}' uses no echo"})
    return Space(reverb=rev, delay_ms=delay_ms, delay_feedback=feedback, delay_mix=delay_mix)


def render_vocal_chain(chain: Stage, vocal, *, sr: int, block_s: float = 5.0, out: np.ndarray | None = None) -> np.ndarray:
    """Run ``chain`` over ``vocal`` in blocks (``reset=False`` streaming) into one ``(2, n)`` array.

    Same result as ``chain(vocal, sr)`` but the temporaries are block-sized, so memory stays at
    about the output plus a few blocks (a 3-minute take: ~70 MB instead of ~250 MB), and the
    short blocks stay in cache. ``vocal`` is a mono array or a block source with ``shape`` and
    ``read(start, stop)`` (e.g. :class:`melisma.audio_io.NpyBlockReader` on the plan's cache), so
    the whole vocal need never be in memory beside the output. ``out``: a ``(2, n)`` float32 buffer
    to fill (e.g. a file-backed one for a long take) instead of a new array.

    >>> import numpy as np
    >>> from melisma.render.stages import Gain
    >>> render_vocal_chain(Space(), np.ones(1000, np.float32), sr=48000, block_s=0.001).shape
    (2, 1000)
    """
    if hasattr(vocal, "read") and hasattr(vocal, "shape"):
        if len(vocal.shape) != 1:
            raise RenderError(f"the vocal chain takes a mono vocal, got shape {vocal.shape}")
        n = int(vocal.shape[0])
        read = vocal.read
    else:
        vocal = np.asarray(vocal, dtype=np.float32)
        if vocal.ndim == 2 and vocal.shape[0] == 1:
            vocal = vocal[0]
        if vocal.ndim != 1:
            raise RenderError(f"the vocal chain takes a mono vocal, got shape {vocal.shape}")
        n = vocal.shape[-1]
        read = lambda a, b: vocal[a:b]  # noqa: E731 - the array form of a block source
    block = max(1, int(round(block_s * sr)))
    for start in range(0, max(n, 1), block):
        piece = chain(read(start, min(n, start + block)), sr, reset=(start == 0))
        piece = piece if piece.ndim == 2 else np.stack([piece, piece])
        if start == 0 and (out is None or out.shape != (piece.shape[0], n)):
            out = np.empty((piece.shape[0], n), dtype=np.float32)
        assert out is not None  # made at the first block
        out[:, start:start + piece.shape[-1]] = piece
    return out if out is not None else np.zeros((2, 0), np.float32)


def split_tone(wet: Chain) -> tuple[Chain, Chain]:
    """Split the *wet* part of :func:`split_vocal_chain` into its tonal EQ (warmth, air) and the rest
    (reverb and echo): what a reverb or vocal-level move leaves alone, and what it runs again.

    >>> import pedalboard
    >>> tone_eq = PedalboardStage([pedalboard.HighShelfFilter(cutoff_frequency_hz=8000.0, gain_db=2.0)],
    ...                           label="EQAndDynamics.tone")
    >>> tone, space = split_tone(Chain([tone_eq, Space()]))
    >>> [s.name for s in tone.stages], [s.name for s in space.stages]
    (['EQAndDynamics.tone'], ['Space'])
    """
    stages = list(wet.stages)
    cut = 0
    while cut < len(stages) and stages[cut].name == "EQAndDynamics.tone":
        cut += 1
    return Chain(stages[:cut]), Chain(stages[cut:])


def split_vocal_chain(chain: Chain) -> tuple[Chain, Chain]:
    """Split a chain of :func:`build_vocal_chain` where the sliders start to matter.

    The *dry* part (de-esser, corrective EQ, compressor and make-up gain) is set by the take's
    analysis and the style alone; the *wet* part (tonal EQ, reverb and echo) by the warmth, air and
    reverb sliders. Running the dry part and then the wet part gives exactly what the whole
    chain gives (pedalboard runs its plugins one after another on each block), so the dry
    vocal can be kept and only the wet part re-run when a slider moves.

    >>> import numpy as np
    >>> from melisma.semantic import resolve_settings
    >>> from melisma.analysis.voice import analyze_voice
    >>> sr = 48000
    >>> vocal = (0.2 * np.sin(2 * np.pi * 220 * np.arange(sr) / sr)).astype(np.float32)
    >>> chain, _ = build_vocal_chain(resolve_settings("cpop"), analyze_voice(vocal, sr=sr), sr=sr)
    >>> dry, wet = split_vocal_chain(chain)
    >>> bool(np.array_equal(wet(dry(vocal, sr), sr), chain(vocal, sr)))
    True
    """
    before: list[Stage] = []
    after: list[Stage] = []
    board: PedalboardStage | None = None
    for stage in chain.stages:
        if board is None and isinstance(stage, PedalboardStage) and stage.name == "EQAndDynamics":
            board = stage
        elif board is None:
            before.append(stage)
        else:
            after.append(stage)
    if board is None:
        return Chain(before), Chain([])
    params = board.describe()
    params.pop("stage", None)
    plugins = list(board.plugins)
    n_tonal = sum(len(_eq_plugin(b)) for b in params.get("tonal_bands", []))
    cut = len(plugins) - n_tonal
    dry_params = {k: v for k, v in params.items() if k != "tonal_bands"}
    dry = Chain([*before, PedalboardStage(plugins[:cut], label="EQAndDynamics.dry", params=dry_params)] if cut else before)
    wet = [PedalboardStage(plugins[cut:], label="EQAndDynamics.tone", params={"tonal_bands": params.get("tonal_bands", [])})]
    return dry, Chain([*wet, *after] if n_tonal else after)
