"""Clean-up stages for phone takes: rumble, mains hum, clipping, broadband noise, gating.

:func:`melisma.analysis.cleanup.analyze_cleanup` says what a take needs; :func:`build_cleanup_chain`
turns that into a :class:`~melisma.render.stages.Chain` of the stages below plus a list of actions
for the mix report; :func:`clean_take` does both in one call.

Order matters: clipping is repaired first (the flat tops are only recognisable in the raw
waveform), then rumble and hum are filtered out, so that the broadband denoiser and the gate see
only the noise they are meant for.

Streaming: the IIR stages (rumble, hum) carry their state exactly with ``reset=False``. The
denoiser and the gate look ahead of a sample (a frame, a detector block plus its look-ahead), so
as stages they return their output ``latency_samples(sr)`` late, in one call as in a stream, and
streaming in any blocks gives what one call gives; :meth:`SpectralDenoiser.denoise` and
:meth:`Gate.gate` (and ``process_into``, which :func:`clean_take` uses) are their aligned offline
forms. The declipper repairs each clipped run from the samples on both sides of it.

Examples
--------
>>> import numpy as np
>>> from melisma.analysis.cleanup import analyze_cleanup
>>> from melisma.render.clean import clean_take
>>> sr = 48000
>>> t = np.arange(6 * sr) / sr
>>> take = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.02 * np.sin(2 * np.pi * 60 * t)).astype(np.float32)
>>> cleaned, actions = clean_take(take, sr=sr, analysis=analyze_cleanup(take, sr=sr))
>>> cleaned.shape == take.shape, [a["action"] for a in actions]
(True, ['highpass', 'hum_notch', 'denoise', 'gate', 'pause_levels'])
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.fft as sfft

from .. import dsp, filter_design
from ..analysis.cleanup import clipped_runs, detect_clipping, estimate_noise, noise_psd_at
from ..errors import ConfigError, RenderError
from .declip import ARDeclipper
from .pauses import block_power_db, pause_levels
from .stages import Chain, OutputDelay, Stage, db_to_gain

# --------------------------------------------------------------------------------------------
# IIR filters (scipy second-order sections: pedalboard's high-pass is only first order, 6 dB/oct,
# and its peak filter is not a true notch; both are too blunt for rumble and hum).


class _SosStage(Stage):
    """A stage that runs second-order sections with per-channel state kept between calls."""

    def _design(self, sr: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def reset(self) -> None:
        self._zi: np.ndarray | None = None
        self._zi_key: tuple | None = None

    def process(self, audio: np.ndarray, sr: int) -> np.ndarray:
        if self._design(sr).size == 0 or audio.shape[-1] == 0:
            return audio
        out = np.empty_like(audio)
        self._filter(audio, sr, out)
        return out

    def process_into(self, audio: np.ndarray, sr: int) -> None:
        """:meth:`process`, overwriting ``audio`` (float32) with the result."""
        self._filter(audio, sr, audio)

    def _filter(self, audio: np.ndarray, sr: int, out: np.ndarray) -> None:
        sos = self._design(sr)
        if sos.size == 0 or audio.shape[-1] == 0:
            if out is not audio:
                out[...] = audio
            return
        key = (sr, audio.shape[:-1], sos.tobytes())
        if getattr(self, "_zi_key", None) != key:
            self._zi = np.zeros((sos.shape[0], *audio.shape[:-1], 2))
            self._zi_key = key
        step = 1 << 16  # blocks keep scipy's float64 temporaries small (Pi Zero: 512 MB)
        zi = self._zi
        assert zi is not None
        for i in range(0, audio.shape[-1], step):
            out[..., i:i + step], zi = dsp.sosfilt(sos, audio[..., i:i + step], zi)
        self._zi = zi


@dataclass
class RumbleFilter(_SosStage):
    """Steep high-pass (Butterworth, 24 dB/octave) under the voice.

    Examples
    --------
    >>> import numpy as np
    >>> sr = 48000
    >>> t = np.arange(sr) / sr
    >>> y = RumbleFilter(cutoff_hz=80.0)(np.sin(2 * np.pi * 20 * t).astype(np.float32), sr)
    >>> bool(np.std(y[sr // 2:]) < 0.01)
    True
    """

    cutoff_hz: float = 70.0
    order: int = 4

    def _design(self, sr: int) -> np.ndarray:
        if not 0.0 < self.cutoff_hz < sr / 2:
            raise RenderError(
                f"RumbleFilter: cutoff_hz={self.cutoff_hz} must lie between 0 and sr/2={sr / 2}; 60-100 Hz suits a voice"
            )
        return dsp.design("butter", self.order, float(self.cutoff_hz), "highpass", sr, "sos")


@dataclass
class HumNotch(_SosStage):
    """Narrow notches at the mains fundamental and its harmonics.

    Each notch ``k`` has quality ``q * sqrt(k)``: the notches widen slowly with frequency, enough
    to follow mains drift (k times the drift at harmonic k) while staying a few Hz wide, so the
    voice around them is untouched.

    Examples
    --------
    >>> import numpy as np
    >>> sr = 48000
    >>> t = np.arange(2 * sr) / sr
    >>> y = HumNotch(fundamental_hz=50.0, n_harmonics=3)(np.sin(2 * np.pi * 150 * t).astype(np.float32), sr)
    >>> bool(np.std(y[sr:]) < 0.01)
    True
    """

    fundamental_hz: float = 50.0
    n_harmonics: int = 8
    q: float = 30.0
    #: Only these harmonic numbers (as detected); None notches all of 1..n_harmonics.
    harmonics: tuple[int, ...] | None = None

    def _design(self, sr: int) -> np.ndarray:
        if not 20.0 <= self.fundamental_hz <= 200.0:
            raise RenderError(f"HumNotch: fundamental_hz={self.fundamental_hz} is no mains frequency; use about 50 or 60 Hz")
        if self.q <= 0 or self.n_harmonics < 0:
            raise RenderError(f"HumNotch: q={self.q} and n_harmonics={self.n_harmonics} must be positive")
        sections = []
        wanted = range(1, int(self.n_harmonics) + 1) if self.harmonics is None else sorted(set(self.harmonics))
        for k in wanted:
            f = k * self.fundamental_hz
            if f >= 0.45 * sr:
                break
            b, a = filter_design.iirnotch(f, self.q * math.sqrt(k), fs=sr)
            sections.append(filter_design.tf2sos(b, a))
        return np.vstack(sections) if sections else np.zeros((0, 6))


# --------------------------------------------------------------------------------------------
# Declipper


@dataclass
class Declipper(Stage):
    """Rebuild clipped runs by cubic (Hermite) interpolation from the samples around them.

    For each run of samples at or above ``threshold`` the curve is continued from the value and
    slope on either side, as the waveform would have gone over the rail. The result is kept on
    the clipped side of the rail (the true signal was at least there) and at most
    ``max_overshoot_db`` above it (a cubic continued from steep edges overshoots on long runs;
    3 dB measured best on sung takes). Light clipping (<= 2 % of samples) comes out 5-11 dB
    closer to the truth; around 5-10 % the result is no better than the clipped take.
    The output may exceed 1.0: leave headroom to the master.
    ``threshold=None`` takes the rail from :func:`~melisma.analysis.cleanup.detect_clipping`.

    Examples
    --------
    >>> import numpy as np
    >>> sr = 48000
    >>> truth = 0.7 * np.sin(2 * np.pi * 200 * np.arange(sr // 10) / sr)
    >>> clipped = np.clip(truth, -0.5, 0.5).astype(np.float32)
    >>> fixed = Declipper(threshold=0.5)(clipped, sr)
    >>> bool(np.abs(fixed - truth).max() < 0.25 * np.abs(clipped - truth).max())
    True
    """

    threshold: float | None = None
    max_overshoot_db: float = 3.0
    min_run: int = 3

    def process(self, audio: np.ndarray, sr: int) -> np.ndarray:
        if audio.ndim == 2:
            return np.stack([self.process(ch, sr) for ch in audio])
        threshold = self.threshold
        if threshold is None:
            found = detect_clipping(audio, sr=sr)
            if found["regions"] == 0:
                return audio
            threshold = found["threshold"]
        if threshold <= 0:
            raise RenderError(f"Declipper: threshold={threshold} must be a positive magnitude (the clipping rail, e.g. 0.99)")
        return declip(audio, threshold=float(threshold), max_overshoot_db=self.max_overshoot_db, min_run=self.min_run)

    def process_into(self, audio: np.ndarray, sr: int) -> None:
        """:meth:`process`, overwriting ``audio`` (float32) with the result."""
        for ch in audio if audio.ndim == 2 else [audio]:
            threshold = self.threshold
            if threshold is None:
                found = detect_clipping(ch, sr=sr)
                if found["regions"] == 0:
                    continue
                threshold = found["threshold"]
            if threshold <= 0:
                raise RenderError(f"Declipper: threshold={threshold} must be a positive magnitude (the clipping rail, e.g. 0.99)")
            declip(ch, threshold=float(threshold), max_overshoot_db=self.max_overshoot_db, min_run=self.min_run, out=ch)


def declip(
    x: np.ndarray, *, threshold: float, max_overshoot_db: float = 3.0, min_run: int = 3, out: np.ndarray | None = None
) -> np.ndarray:
    """Hermite-interpolate every clipped run of ``x`` (vectorised over all runs); see :class:`Declipper`.

    ``out`` (float32, shape of ``x``, may be ``x`` itself) receives the result; by default a copy.
    """
    x = np.asarray(x, dtype=np.float32)
    if out is not None and out is not x:
        out[...] = x
    starts, ends = clipped_runs(x, threshold=threshold, min_run=min_run)
    # need three good samples on each side for value and slope
    ok = (starts >= 3) & (ends <= x.size - 3)
    starts, ends = starts[ok], ends[ok]
    if starts.size == 0:
        return x if out is None else out
    lengths = ends - starts
    run_of = np.repeat(np.arange(starts.size), lengths)
    idx = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths) + starts[run_of]
    left, right = starts - 1, ends

    def xd(i: np.ndarray) -> np.ndarray:  # gather in float64 without a full-size copy
        return x[i].astype(np.float64)

    y0, y1 = xd(left), xd(right)
    # slopes from second-order one-sided differences of the unclipped neighbours
    m0 = 1.5 * xd(left) - 2.0 * xd(left - 1) + 0.5 * xd(left - 2)
    m1 = -1.5 * xd(right) + 2.0 * xd(right + 1) - 0.5 * xd(right + 2)
    span = (right - left).astype(np.float64)
    u = (idx - left[run_of]) / span[run_of]
    h00 = 2 * u**3 - 3 * u**2 + 1
    h10 = u**3 - 2 * u**2 + u
    h01 = -2 * u**3 + 3 * u**2
    h11 = u**3 - u**2
    curve = h00 * y0[run_of] + h10 * span[run_of] * m0[run_of] + h01 * y1[run_of] + h11 * span[run_of] * m1[run_of]
    polarity = np.sign(xd(idx))
    cap = threshold * db_to_gain(max_overshoot_db)
    if out is None:
        out = x.copy()
    out[idx] = (polarity * np.clip(polarity * curve, threshold, cap)).astype(np.float32)
    return out


# --------------------------------------------------------------------------------------------
# Spectral denoiser


@dataclass
class SpectralDenoiser(Stage):
    """STFT noise reduction with a decision-directed Wiener-type gain that spares the voice.

    The a-priori SNR of every bin is tracked by the decision-directed rule (Ephraim & Malah), the
    gain is the Wiener gain raised to ``gain_exponent`` (1: Wiener, measured 2 dB better SNR than
    0.5, the power-subtraction gain, at the same voice level), and three guards keep what a singer
    cares about:

    * bins well above the noise (``protect_db``; a partial of a vowel, a breath's peak) pass at
      almost full gain, and so do their neighbours, so a harmonic sweeping in vibrato is not
      chopped as it moves from bin to bin;
    * the gain falls back slowly (``release_ms``) and rises at once, so vibrato tails, decays and
      soft breaths fade naturally instead of being cut off;
    * the gain never goes below ``-reduction_db``: noise is lowered, not removed, which also
      masks the "musical noise" of isolated bins.

    ``noise`` is the ``noise`` record of :func:`~melisma.analysis.cleanup.analyze_cleanup`
    (``band_hz`` and ``profile_db``, a PSD in dBFS/Hz); without it the stage estimates it from
    the audio it is given.

    Examples
    --------
    >>> import numpy as np
    >>> sr = 16000
    >>> rng = np.random.default_rng(0)
    >>> noise = 0.01 * rng.standard_normal(2 * sr).astype(np.float32)
    >>> y = SpectralDenoiser(reduction_db=12.0)(noise, sr)
    >>> round(20 * np.log10(np.std(y) / np.std(noise)))
    -12
    """

    reduction_db: float = 12.0
    noise: dict[str, Any] | None = field(default=None, repr=False)
    frame_ms: float = 40.0
    dd_alpha: float = 0.96
    protect_db: float = 12.0
    release_ms: float = 100.0
    gain_exponent: float = 1.0
    block_frames: int = 256

    def describe(self) -> dict[str, Any]:
        return {
            "stage": self.name,
            "reduction_db": self.reduction_db,
            "frame_ms": self.frame_ms,
            "release_ms": self.release_ms,
            "protect_db": self.protect_db,
        }

    def reset(self) -> None:
        self._prev_clean = None  # |S|^2 estimate of the last frame (decision-directed memory)
        self._prev_gain = None
        self._stream: dict[str, Any] | None = None  # streaming: pending input, output delay, constants

    def latency_samples(self, sr: int) -> int:
        """Streaming delay: one frame (a sample's output needs the frame that ends a hop after it)."""
        return self._n_fft(sr)

    def _n_fft(self, sr: int) -> int:
        return int(2 ** round(math.log2(self.frame_ms * 1e-3 * sr)))

    def denoise(self, audio: np.ndarray, sr: int) -> np.ndarray:
        """The whole signal denoised and aligned with its input (no latency): the offline form."""
        out = np.array(audio, dtype=np.float32, order="C")
        self.reset()
        self.process_into(out, sr)
        return out

    def process(self, audio: np.ndarray, sr: int) -> np.ndarray:
        """Streaming form: returns the denoised audio :meth:`latency_samples` late."""
        x = audio if audio.ndim == 2 else audio[None, :]
        st = self._stream
        if st is None:
            hop = self._n_fft(sr) // 2
            noise = self.noise if self.noise is not None else estimate_noise(x[0], sr=sr)  # from the first block
            st = self._stream = {
                "sr": sr, "hop": hop, "consts": self._constants(noise, sr),
                # a hop of zeros in front, as the offline form pads; the first chunk it yields is dropped
                "pending": np.zeros((x.shape[0], hop), np.float32), "drop": hop,
                "carry": np.zeros((x.shape[0], hop), np.float32),
                "state": [(None, None)] * x.shape[0],
                "delay": OutputDelay(x.shape[0], 2 * hop),
            }
        elif st["sr"] != sr or st["pending"].shape[0] != x.shape[0]:
            raise RenderError(f"SpectralDenoiser: a streaming block of {x.shape[0]} channel(s) at {sr} Hz does not "
                              f"continue the stream; call with reset=True")
        if st["consts"] is None:  # no noise to reduce: a pure delay
            st["delay"].push(x)
        else:
            self._stream_frames(x, st)
        out = st["delay"].pop(x.shape[1])
        return out if audio.ndim == 2 else out[0]

    def _stream_frames(self, x: np.ndarray, st: dict[str, Any]) -> None:
        hop = st["hop"]
        buf = np.concatenate([st["pending"], x], axis=1)
        m = buf.shape[1] // hop - 1  # frames that are complete (each spans two hops)
        if m <= 0:
            st["pending"] = buf
            return
        produced = np.empty((buf.shape[0], m * hop), np.float32)
        for c in range(buf.shape[0]):
            self._prev_clean, self._prev_gain = st["state"][c]
            carry = st["carry"][c]
            frames = np.lib.stride_tricks.sliding_window_view(buf[c, : (m + 1) * hop], 2 * hop)[::hop][:m]
            for b0 in range(0, m, max(1, int(self.block_frames))):
                blocks = self._frames_out(frames[b0 : b0 + max(1, int(self.block_frames))], st["consts"])
                done = blocks[:, :hop].astype(np.float32)
                done[0] += carry
                done[1:] += blocks[:-1, hop:]
                carry = blocks[-1, hop:].astype(np.float32)
                produced[c, b0 * hop : b0 * hop + done.size] = done.reshape(-1)
            st["carry"][c] = carry
            st["state"][c] = (self._prev_clean, self._prev_gain)
        drop = min(st["drop"], produced.shape[1])
        st["drop"] -= drop
        st["delay"].push(produced[:, drop:])
        st["pending"] = buf[:, m * hop :].copy()

    def process_into(self, audio: np.ndarray, sr: int) -> None:
        """The offline form, overwriting ``audio`` (float32, C-contiguous rows) with the aligned result."""
        if audio.ndim == 2:
            saved = (self._prev_clean, self._prev_gain)
            for ch in audio:
                self._prev_clean, self._prev_gain = saved
                self._denoise(ch, sr, ch)
            return
        self._denoise(audio, sr, audio)

    def _constants(self, noise: dict[str, Any], sr: int) -> dict[str, Any] | None:
        """Per-bin constants of the gain rule for a noise profile; None when there is nothing to reduce."""
        if self.reduction_db < 0:
            raise RenderError(f"SpectralDenoiser: reduction_db={self.reduction_db} must be >= 0 (e.g. 12)")
        if self.reduction_db == 0:
            return None
        if not noise.get("n_frames_used", 1) or max(noise.get("profile_db", [-200.0])) <= -190.0:
            return None
        n_fft = self._n_fft(sr)
        hop = n_fft // 2
        window = np.sqrt(filter_design.hann(n_fft)).astype(np.float32)  # periodic; sqrt-Hann^2 sums to 1 at 50 %
        freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
        # expected |X|^2 of the noise in each bin: one-sided PSD * sr * sum(w^2) / 2
        noise_bins = noise_psd_at(noise, freqs) * sr * float(np.sum(window.astype(np.float64) ** 2)) / 2.0
        noise_bins = np.maximum(noise_bins, 1e-20).astype(np.float32)
        inv_noise = (1.0 / noise_bins).astype(np.float32)
        floor_gain = np.float32(db_to_gain(-self.reduction_db))
        alpha = np.float32(self.dd_alpha)
        release = np.float32(math.exp(-hop / (self.release_ms * 1e-3 * sr)))
        return {
            "n_fft": n_fft, "window": window, "noise_bins": noise_bins, "inv_noise": inv_noise,
            "floor_gain": floor_gain, "alpha": alpha, "protect": np.float32(10 ** (self.protect_db / 10.0)),
            "release": release, "xi_min": np.float32(1e-3), "gain_exponent": np.float32(self.gain_exponent),
            "alpha_inv_noise": alpha * inv_noise, "release_offset": floor_gain * (np.float32(1.0) - release),
        }

    def _frames_out(self, frames: np.ndarray, k: dict[str, Any]) -> np.ndarray:
        """Gains and resynthesis of ``frames`` (m, n_fft): the windowed output frames, state carried."""
        prev_clean, prev_gain = self._prev_clean, self._prev_gain
        if prev_clean is None or prev_clean.shape != k["noise_bins"].shape:
            prev_clean, prev_gain = None, np.full_like(k["noise_bins"], k["floor_gain"])
        inv_noise, alpha, alpha_inv_noise = k["inv_noise"], k["alpha"], k["alpha_inv_noise"]
        release, release_offset, gain_exponent = k["release"], k["release_offset"], k["gain_exponent"]
        spec = sfft.rfft(frames * k["window"], axis=1)
        power = spec.real**2 + spec.imag**2
        gamma = power * inv_noise
        # (1 - alpha) * maximum-likelihood SNR, the decision-directed rule's fresh part
        fresh = np.maximum(gamma - 1.0, 0.0) * (1.0 - alpha)
        # partials well above the noise, and the bins next to them, pass (power subtraction)
        strong = gamma > k["protect"]
        strong[:, 1:] |= strong[:, :-1].copy()
        strong[:, :-1] |= strong[:, 1:].copy()
        pass_gain = np.where(strong, np.sqrt(np.maximum(1.0 - 1.0 / np.maximum(gamma, 1.0), 0.0)), 0.0).astype(np.float32)
        gains = np.empty_like(power)
        for i in range(power.shape[0]):
            xi = fresh[i] if prev_clean is None else prev_clean * alpha_inv_noise + fresh[i]
            np.maximum(xi, k["xi_min"], out=xi)
            g = xi / (1.0 + xi)
            if gain_exponent != 1.0:
                g = g**gain_exponent
            prev_clean = g * g * power[i]
            # once a bin has held a partial its gain falls back slowly (decays, vibrato
            # tails); noise-only bins follow the decision-directed gain alone
            prev_gain = np.maximum(prev_gain * release + release_offset, pass_gain[i])
            gains[i] = np.maximum(g, prev_gain)
        # light smoothing across frequency against isolated bins ("musical noise")
        gains[:, 1:-1] = 0.25 * gains[:, :-2] + 0.5 * gains[:, 1:-1] + 0.25 * gains[:, 2:]
        np.maximum(gains, k["floor_gain"], out=gains)
        spec *= gains
        blocks = sfft.irfft(spec, n=k["n_fft"], axis=1)
        blocks *= k["window"]
        self._prev_clean, self._prev_gain = prev_clean, prev_gain
        return blocks

    def _denoise(self, audio: np.ndarray, sr: int, out: np.ndarray) -> bool:
        """Denoise mono ``audio`` into ``out`` (may be ``audio``); False when nothing was done (out untouched)."""
        if self.reduction_db < 0:
            raise RenderError(f"SpectralDenoiser: reduction_db={self.reduction_db} must be >= 0 (e.g. 12)")
        if self.reduction_db == 0 or audio.size == 0:
            if out is not audio:
                out[...] = audio
            return False
        noise = self.noise if self.noise is not None else estimate_noise(audio, sr=sr)
        k = self._constants(noise, sr)
        if k is None:
            if out is not audio:
                out[...] = audio
            return False
        n_fft = k["n_fft"]
        hop = n_fft // 2
        # The input as if padded by a hop of zeros in front and zeros after, so every sample is
        # covered by two frames: frame j spans padded samples [j*hop, j*hop + n_fft), i.e.
        # audio[(j-1)*hop : (j+1)*hop]. A block's frames are copied into a small buffer first,
        # so the output may overwrite the input (its writes trail the reads by a block).
        n = audio.size
        n_frames = int(math.ceil((n + hop) / hop))
        block_frames = max(1, int(self.block_frames))
        staging = np.zeros((block_frames + 1) * hop, dtype=np.float32)
        # With 50 % overlap frame j adds to output chunks j and j + 1 (chunk k is padded samples
        # [k*hop, (k+1)*hop)); a block's last chunk waits in `carry` for the next block's frames.
        carry = np.zeros(hop, np.float32)

        def write_chunks(first: int, values: np.ndarray) -> None:
            lo, hi = (first - 1) * hop, (first - 1) * hop + values.size  # padded -> audio index
            values = values.reshape(-1)
            a, b = max(lo, 0), min(hi, n)
            if b > a:
                out[a:b] = values[a - lo : b - lo]

        for b0 in range(0, n_frames, block_frames):
            m = min(block_frames, n_frames - b0)
            lo, hi = (b0 - 1) * hop, (b0 + m) * hop  # audio samples the block's frames span
            staging[:] = 0.0
            a, b = max(lo, 0), min(hi, n)
            if b > a:
                staging[a - lo : b - lo] = audio[a:b]
            frames = np.lib.stride_tricks.sliding_window_view(staging[: (m + 1) * hop], n_fft)[::hop][:m]
            blocks = self._frames_out(frames, k)
            done = blocks[:, :hop].astype(np.float32)
            done[0] += carry
            done[1:] += blocks[:-1, hop:]
            carry = blocks[-1, hop:].astype(np.float32)
            write_chunks(b0, done)
        write_chunks(n_frames, carry)
        return True


# --------------------------------------------------------------------------------------------
# Gate


@dataclass
class Gate(Stage):
    """Gentle downward gate: lowers the level between phrases by ``floor_db``, never to silence.

    The detector is the RMS of 5 ms blocks (looking ``lookahead_ms`` ahead so consonant onsets
    open it in time). It opens above ``threshold_db`` (dBFS RMS), closes ``hysteresis_db`` below
    it after ``hold_ms``, and the gain moves with ``attack_ms`` / ``release_ms`` time constants.
    The same gain is applied to every channel.

    Examples
    --------
    >>> import numpy as np
    >>> sr = 48000
    >>> x = np.full(2 * sr, 0.001, np.float32)
    >>> x[:sr // 2] = 0.3 * np.sin(2 * np.pi * 220 * np.arange(sr // 2) / sr)
    >>> y = Gate(threshold_db=-40.0, floor_db=-15.0)(x, sr)
    >>> rms = lambda a: np.sqrt(np.mean(a.astype(np.float64) ** 2))
    >>> round(20 * np.log10(rms(y[-sr // 10:]) / rms(x[-sr // 10:])))
    -15
    """

    threshold_db: float = -50.0
    attack_ms: float = 5.0
    hold_ms: float = 150.0
    release_ms: float = 200.0
    floor_db: float = -15.0
    hysteresis_db: float = 3.0
    lookahead_ms: float = 5.0

    def reset(self) -> None:
        self._gain_db: float | None = None
        self._last_gain: float | None = None
        self._open = False
        self._hold_left = 0
        self._stream: dict[str, Any] | None = None  # streaming: pending input and output delay

    def _check(self) -> None:
        if self.floor_db > 0:
            raise RenderError(f"Gate: floor_db={self.floor_db} must be <= 0 (e.g. -15: gentle, not silence)")
        if min(self.attack_ms, self.hold_ms, self.release_ms, self.lookahead_ms) < 0:
            raise RenderError("Gate: attack_ms, hold_ms, release_ms and lookahead_ms must be >= 0")

    @staticmethod
    def _block(sr: int) -> int:
        return max(1, int(round(0.005 * sr)))

    def _look(self, sr: int) -> int:
        return int(round(self.lookahead_ms * 1e-3 * sr / self._block(sr)))

    def latency_samples(self, sr: int) -> int:
        """Streaming delay: the look-ahead plus one detector block."""
        return (self._look(sr) + 1) * self._block(sr)

    def gate(self, audio: np.ndarray, sr: int) -> np.ndarray:
        """The whole signal gated and aligned with its input (no latency): the offline form."""
        out = np.array(audio, dtype=np.float32, order="C")
        self.reset()
        self.process_into(out, sr)
        return out

    def process(self, audio: np.ndarray, sr: int) -> np.ndarray:
        """Streaming form: returns the gated audio :meth:`latency_samples` late."""
        self._check()
        x = audio if audio.ndim == 2 else audio[None, :]
        block, look = self._block(sr), self._look(sr)
        st = self._stream
        if st is None:
            st = self._stream = {"sr": sr, "pending": np.zeros((x.shape[0], 0), np.float32),
                                 "delay": OutputDelay(x.shape[0], self.latency_samples(sr))}
        elif st["sr"] != sr or st["pending"].shape[0] != x.shape[0]:
            raise RenderError(f"Gate: a streaming block of {x.shape[0]} channel(s) at {sr} Hz does not continue "
                              f"the stream; call with reset=True")
        buf = np.concatenate([st["pending"], x], axis=1)
        n_complete = buf.shape[1] // block
        ready = n_complete - look  # blocks whose look-ahead has arrived
        if ready > 0:
            mono = buf[0] if buf.shape[0] == 1 else np.mean(buf, axis=0)
            body = mono[: n_complete * block].reshape(n_complete, block)
            power = np.einsum("ij,ij->i", body, body, dtype=np.float64) / block
            if look > 0:
                power = np.maximum.reduce([power[k : k + ready] for k in range(look + 1)])
            gains_db = self._gains_db(10.0 * np.log10(np.maximum(power[:ready], 1e-20)), sr)
            seg = buf[:, : ready * block]
            out = np.empty_like(seg)
            self._ramp(seg, gains_db, block, out)
            st["delay"].push(out)
            st["pending"] = buf[:, ready * block :].copy()
        else:
            st["pending"] = buf
        y = st["delay"].pop(x.shape[1])
        return y if audio.ndim == 2 else y[0]

    def process_into(self, audio: np.ndarray, sr: int) -> None:
        """The offline form, overwriting ``audio`` (float32) with the aligned result."""
        self._apply(audio, sr, audio)

    def _apply(self, audio: np.ndarray, sr: int, out: np.ndarray) -> None:
        self._check()
        n = audio.shape[-1]
        if n == 0:
            return
        mono = audio if audio.ndim == 1 else np.mean(audio, axis=0)
        block = self._block(sr)
        n_blocks = int(math.ceil(n / block))
        n_full = n // block
        power = np.empty(n_blocks, dtype=np.float64)
        body = mono[: n_full * block].reshape(n_full, block)
        power[:n_full] = np.einsum("ij,ij->i", body, body, dtype=np.float64) / block
        if n_blocks > n_full:
            rest = mono[n_full * block :].astype(np.float64)
            power[-1] = float(np.mean(rest * rest))
        look = self._look(sr)
        if look > 0:
            power = np.maximum.reduce([np.r_[power[k:], np.full(k, power[-1])] for k in range(look + 1)])
        gains_db = self._gains_db(10.0 * np.log10(np.maximum(power, 1e-20)), sr)
        self._ramp(audio, gains_db, block, out)

    def _gains_db(self, level_db: np.ndarray, sr: int) -> np.ndarray:
        """The gate's gain (dB) at the end of each detector block, its open/hold/gain state carried."""
        block = self._block(sr)
        open_at = self.threshold_db
        close_at = self.threshold_db - self.hysteresis_db
        hold_blocks = int(round(self.hold_ms * 1e-3 * sr / block))
        dt = block / sr
        attack = math.exp(-dt / max(self.attack_ms * 1e-3, 1e-6))
        release = math.exp(-dt / max(self.release_ms * 1e-3, 1e-6))
        g = self._gain_db if self._gain_db is not None else (0.0 if level_db[0] > close_at else self.floor_db)
        is_open, hold_left = self._open, self._hold_left
        gains_db = np.empty(level_db.size)
        floor = self.floor_db
        for i, lv in enumerate(level_db.tolist()):
            if lv > open_at:
                is_open, hold_left = True, hold_blocks
            elif lv < close_at:
                if hold_left > 0:
                    hold_left -= 1
                else:
                    is_open = False
            target = 0.0 if is_open else floor
            coef = attack if target > g else release
            g = target + (g - target) * coef
            gains_db[i] = g
        self._gain_db, self._open, self._hold_left = g, is_open, hold_left
        return gains_db

    def _ramp(self, audio: np.ndarray, gains_db: np.ndarray, block: int, out: np.ndarray) -> None:
        """Apply the block gains, ramped linearly from each block's start to its end, sample by sample."""
        n = audio.shape[-1]
        n_blocks = gains_db.size
        block_gain = (10.0 ** (gains_db / 20.0)).astype(np.float32)
        start_gain = np.empty_like(block_gain)
        start_gain[0] = self._last_gain if self._last_gain is not None else block_gain[0]
        start_gain[1:] = block_gain[:-1]
        self._last_gain = float(block_gain[-1])
        ramp = (np.arange(block, dtype=np.float32) + 1.0) / block
        step = 2048  # blocks at a time: the gain curve never exists at full length
        for b in range(0, n_blocks, step):
            g = (start_gain[b : b + step, None] + (block_gain - start_gain)[b : b + step, None] * ramp[None, :]).reshape(-1)
            lo, hi = b * block, min(n, (b + step) * block)
            np.multiply(audio[..., lo:hi], g[: hi - lo], out=out[..., lo:hi])


# --------------------------------------------------------------------------------------------
# Chain from analysis


#: Most hum harmonics notched; above ~1 kHz the broadband denoiser takes over (and each notch costs time).
MAX_HUM_HARMONICS = 16
#: Harmonics 1..5 are notched whenever hum is found (mains hum carries them; cheap, narrow).
ALWAYS_NOTCHED = 5
#: The broadband denoisers the clean-up can run (see :func:`build_cleanup_chain`), and its default.
DENOISERS = ("hybrid", "learned", "spectral", "auto")
DEFAULT_DENOISER = "spectral"
#: 'auto' runs the hybrid below this SNR (the analysis's ``noise.snr_db``) and the spectral denoiser at or above it
#: (tools/bench_denoise.py: the hybrid wins at 10 dB SNR, the spectral denoiser at 20 dB; see firmware/docs/denoise.md).
AUTO_HYBRID_BELOW_SNR_DB = 17.0
#: The learned denoiser's gain floor at noise_reduction=1 (dB).
LEARNED_REDUCTION_DB = 30.0


def build_cleanup_chain(analysis: dict[str, Any], *, sr: int, noise_reduction: float = 1.0,
                        denoiser: str = DEFAULT_DENOISER) -> tuple[Chain, list[dict[str, Any]]]:
    """The clean-up stages a take needs, from :func:`~melisma.analysis.cleanup.analyze_cleanup`.

    Parameters
    ----------
    analysis : dict
        The clean-up analysis of the take.
    sr : int
        Sample rate the chain will run at, in Hz.
    noise_reduction : float
        0 turns denoising and gating off, 1 is the default strength (12 dB of noise reduction,
        15 dB gate floor), up to 2.
    denoiser : {'spectral', 'learned', 'hybrid', 'auto'}
        'spectral': :class:`SpectralDenoiser` with the noise profile of the analysis (a
        ``denoise`` action). 'learned': :class:`~melisma.render.learned_denoise.LearnedDenoiser`
        (the int8 model, for non-stationary noise; gain floor ``LEARNED_REDUCTION_DB *
        noise_reduction``; a ``learned_denoise`` action). 'hybrid': the spectral denoiser, then the
        learned one on what it leaves. When the model cannot be loaded or the rate is not
        48 kHz, 'learned' and 'hybrid' fall back to the spectral denoiser alone and its action
        says why (``method: 'spectral'``, ``fallback``). 'auto': 'hybrid' when the analysis's
        ``noise.snr_db`` is below :data:`AUTO_HYBRID_BELOW_SNR_DB`, else 'spectral' (the first
        denoise action's ``auto`` says which and why).

    Returns
    -------
    (Chain, list of dict)
        The chain, and one action per stage for the mix report.

    Examples
    --------
    >>> from melisma.render.clean import build_cleanup_chain
    >>> analysis = {"rumble": {"highpass_hz": 70.0}, "hum": {"detected": True, "fundamental_hz": 49.97, "n_harmonics": 5},
    ...             "clipping": {"regions": 0}, "noise": {"n_frames_used": 0}, "gate": {"threshold_dbfs": -60.0}}
    >>> chain, actions = build_cleanup_chain(analysis, sr=48000)
    >>> [a["action"] for a in actions]
    ['highpass', 'hum_notch']
    """
    if not 0.0 <= noise_reduction <= 2.0:
        raise ConfigError(f"noise_reduction={noise_reduction} is out of range; use 0 (off) to 2 (strong), 1 is the default")
    if denoiser not in DENOISERS:
        raise ConfigError(f"denoiser={denoiser!r} is unknown; use one of {', '.join(DENOISERS)}")
    if sr <= 0:
        raise RenderError(f"build_cleanup_chain: sample rate must be positive, got sr={sr}")
    stages: list[Stage] = []
    actions: list[dict[str, Any]] = []

    clipping = analysis.get("clipping", {})
    if clipping.get("regions", 0) > 0:
        stages.append(ARDeclipper(threshold=float(clipping["threshold"])))  # render/declip.py
        actions.append(
            {
                "action": "declip",
                "method": "ar",
                "threshold": float(clipping["threshold"]),
                "regions": int(clipping["regions"]),
                "fraction": float(clipping.get("fraction", 0.0)),
            }
        )

    cutoff = float(analysis.get("rumble", {}).get("highpass_hz", 70.0))
    cutoff = min(cutoff, 0.45 * sr)
    stages.append(RumbleFilter(cutoff_hz=cutoff))
    actions.append({"action": "highpass", "cutoff_hz": cutoff})

    hum = analysis.get("hum", {})
    if hum.get("detected") and hum.get("fundamental_hz"):
        n_harm = int(min(max(hum.get("n_harmonics", 1), ALWAYS_NOTCHED), MAX_HUM_HARMONICS))
        found = [int(k) for k in hum.get("harmonics", []) if 1 <= int(k) <= n_harm]
        # the detected lines, plus the low harmonics that hum nearly always has even where the
        # voice hides them from detection
        harmonics = tuple(sorted(set(found) | set(range(1, ALWAYS_NOTCHED + 1))))
        stage = HumNotch(fundamental_hz=float(hum["fundamental_hz"]), n_harmonics=n_harm, harmonics=harmonics)
        stages.append(stage)
        actions.append(
            {
                "action": "hum_notch",
                "fundamental_hz": stage.fundamental_hz,
                "harmonics": n_harm,
                "notched": list(harmonics) if harmonics else list(range(1, n_harm + 1)),
                "q": stage.q,
            }
        )

    noise = analysis.get("noise", {})
    if noise_reduction > 0 and noise.get("n_frames_used", 0) > 0:
        denoise_stages, denoise_actions = _denoise_stages(denoiser, noise, noise_reduction, sr)
        stages.extend(denoise_stages)
        actions.extend(denoise_actions)
        gate = Gate(
            threshold_db=float(analysis.get("gate", {}).get("threshold_dbfs", noise.get("floor_dbfs", -60.0) + 6.0)),
            floor_db=-min(15.0 * noise_reduction, 20.0),
        )
        stages.append(gate)
        actions.append(
            {
                "action": "gate",
                "threshold_db": gate.threshold_db,
                "floor_db": gate.floor_db,
                "hold_ms": gate.hold_ms,
                "release_ms": gate.release_ms,
            }
        )
    return Chain(stages), actions


def _denoise_stages(denoiser: str, noise: dict[str, Any], noise_reduction: float,
                    sr: int) -> tuple[list[Stage], list[dict[str, Any]]]:
    """The broadband denoiser(s) and their report actions; the learned one falls back to the spectral one."""
    if denoiser == "auto":
        snr = noise.get("snr_db")
        chosen = "hybrid" if snr is not None and snr < AUTO_HYBRID_BELOW_SNR_DB else "spectral"
        stages, actions = _denoise_stages(chosen, noise, noise_reduction, sr)
        actions[0] = actions[0] | {"auto": f"{chosen}: SNR {snr} dB {'<' if chosen == 'hybrid' else '>='} "
                                           f"{AUTO_HYBRID_BELOW_SNR_DB:g} dB"}
        return stages, actions
    reduction = 12.0 * noise_reduction
    spectral = SpectralDenoiser(reduction_db=reduction, noise=noise)
    spectral_action = {"action": "denoise", "reduction_db": reduction,
                       "noise_floor_dbfs": noise.get("floor_dbfs"), "snr_db": noise.get("snr_db")}
    if denoiser == "spectral":
        return [spectral], [spectral_action]
    from ..errors import ModelError
    from .learned_denoise import SR as LEARNED_SR
    from .learned_denoise import LearnedDenoiser

    if sr != LEARNED_SR:
        fallback = f"the learned denoiser runs at {LEARNED_SR} Hz, the take is at {sr} Hz"
    else:
        try:
            learned = LearnedDenoiser(reduction_db=LEARNED_REDUCTION_DB * noise_reduction).load()
        except ModelError as exc:
            fallback = str(exc)
        else:
            action = {"action": "learned_denoise", "reduction_db": learned.reduction_db, "model": learned.path().name}
            if denoiser == "learned":
                return [learned], [action]
            return [spectral, learned], [spectral_action, action]  # hybrid: the steady floor first, then what moves
    return [spectral], [spectral_action | {"method": "spectral", "fallback": fallback}]


def clean_take(
    take: np.ndarray, *, sr: int, analysis: dict[str, Any], noise_reduction: float = 1.0, in_place: bool = False,
    denoiser: str = DEFAULT_DENOISER,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Run the clean-up a take needs; returns the cleaned take (float32, same shape) and the actions.

    Every stage works in one take-sized buffer: a copy of the take, or with ``in_place=True`` the
    take itself when it is a C-contiguous float32 array (it is then overwritten and returned).

    Examples
    --------
    >>> import numpy as np
    >>> from melisma.analysis.cleanup import analyze_cleanup
    >>> x = np.zeros(4800, np.float32)
    >>> y, actions = clean_take(x, sr=48000, analysis=analyze_cleanup(x, sr=48000))
    >>> y.shape, float(np.abs(y).max())
    ((4800,), 0.0)
    """
    x = np.asarray(take, dtype=np.float32)
    if x.ndim not in (1, 2):
        raise RenderError(f"clean_take: take must be (samples,) or (channels, samples), got shape {x.shape}")
    chain, actions = build_cleanup_chain(analysis, sr=sr, noise_reduction=noise_reduction, denoiser=denoiser)
    if x.shape[-1] == 0:
        return x.copy(), actions
    if not (in_place and x is take and x.flags.c_contiguous and x.flags.writeable):
        x = np.array(x, dtype=np.float32, order="C")
    chain.reset()
    mono = (lambda y: y if y.ndim == 1 else y.mean(axis=0))  # noqa: E731 - the pauses' levels (render/pauses.py)
    before_db = block_power_db(mono(x), sr=sr)
    for stage in chain.stages:
        if hasattr(stage, "process_into"):
            stage.process_into(x, sr)
        else:
            x[...] = stage(x, sr, reset=False)
    actions.append({"action": "pause_levels", **pause_levels(before_db, block_power_db(mono(x), sr=sr))})
    return x, actions


# --------------------------------------------------------------------------------------------
# Bleed removal with the reference (the aligned backing)


class _Reference:
    """Random access to a mono reference: an array (mono or ``(channels, samples)``) or a block
    reader with ``read(start, stop)`` (:class:`~melisma.audio_io.NpyBlockReader`); channels are
    averaged, ranges outside the signal read as zeros.
    """

    def __init__(self, source: Any):
        self._source = source
        if isinstance(source, np.ndarray) or (hasattr(source, "read") and hasattr(source, "shape")):
            self.n_samples = int(source.shape[-1])
        else:
            raise RenderError(f"BleedCanceller: reference must be an array or a block reader, got {type(source).__name__}")

    def read(self, start: int, stop: int) -> np.ndarray:
        out = np.zeros(max(0, stop - start), np.float32)
        a, b = max(start, 0), min(stop, self.n_samples)
        if b > a:
            src = self._source
            part = np.asarray(src[..., a:b] if isinstance(src, np.ndarray) else src.read(a, b), np.float32)
            out[a - start : b - start] = part if part.ndim == 1 else np.mean(part, axis=0)
        return out


@dataclass
class BleedModel:
    """How the backing leaks into a take, per STFT bin: a short complex filter on the reference's
    frames (the linear path: speaker, room, codec's linear part) and the level of what it leaves
    (the room's tail beyond the filter, saturation, codec noise), from :func:`fit_bleed`.
    """

    sr: int
    n_fft: int
    hop: int
    lead: int  # frames of reference after the take's frame the filter may use (alignment slack)
    filters: np.ndarray = field(repr=False)  # (bins, taps) complex64, in window order
    residual: np.ndarray = field(repr=False)  # (bins,) residual bleed power relative to the smoothed estimate
    explained: np.ndarray = field(repr=False)  # (bins,) weighted share of the take the filter explains
    detected: bool = False

    @property
    def taps(self) -> int:
        return int(self.filters.shape[1])


def _frame_params(sr: int, frame_ms: float) -> tuple[int, int]:
    n_fft = int(2 ** round(math.log2(frame_ms * 1e-3 * sr)))
    return n_fft, n_fft // 4


def _stft_frames(x: np.ndarray, n_fft: int, hop: int, window: np.ndarray) -> np.ndarray:
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop]
    return sfft.rfft(frames * window, axis=-1).astype(np.complex64)


class _FrameSource:
    """STFT frames of a take and the matching windows of reference frames, chunk by chunk.

    Frame ``m`` covers take samples ``[m*hop - P, m*hop - P + n_fft)`` (``P = n_fft - hop``: the
    first frames start before the take); its reference window holds reference frames
    ``m + lead - taps + 1 .. m + lead``.
    """

    def __init__(self, reference: _Reference, n_fft: int, hop: int, taps: int, lead: int):
        self.ref, self.n_fft, self.hop, self.taps, self.lead = reference, n_fft, hop, taps, lead
        # Hann analysis (low side lobes: little leakage between bins, which a per-bin filter cannot
        # model) and Hann synthesis; at a quarter-frame hop their product sums to 1.5.
        self.window = filter_design.hann(n_fft).astype(np.float32)
        self.pad = n_fft - hop

    def reference_windows(self, m0: int, m: int) -> np.ndarray:
        """``(m, bins, taps)`` reference frames for take frames ``m0 .. m0 + m - 1``."""
        first = m0 + self.lead - self.taps + 1
        count = m + self.taps - 1
        start = first * self.hop - self.pad
        x = self.ref.read(start, start + (count - 1) * self.hop + self.n_fft)
        frames = _stft_frames(x, self.n_fft, self.hop, self.window)
        return np.lib.stride_tricks.sliding_window_view(frames, self.taps, axis=0)

    def take_frames(self, take: np.ndarray, m0: int, m: int) -> np.ndarray:
        start = m0 * self.hop - self.pad
        seg = np.zeros((m - 1) * self.hop + self.n_fft, np.float32)
        a, b = max(start, 0), min(start + seg.size, take.shape[-1])
        if b > a:
            seg[a - start : b - start] = take[a:b]
        return _stft_frames(seg, self.n_fft, self.hop, self.window)


#: Frames a bleed fit should see before it skips frames (about 43 s of take at 48 kHz).
_FIT_FRAMES = 8000


def fit_bleed(
    take: np.ndarray, reference: Any, *, sr: int, frame_ms: float = 21.3, tail_ms: float = 64.0, lead_ms: float = 12.0,
    chunk_frames: int = 256, iterations: int = 3, frame_stride: int | None = None,
) -> BleedModel:
    """Estimate how the reference (the aligned backing) leaks into ``take`` (mono, same timeline).

    Per STFT bin, a complex filter of ``tail_ms`` of reference frames (``lead_ms`` of them after the
    take's frame, for alignment error and zero-phase speakers) is fitted by weighted least squares
    over the whole take, ``iterations`` times (iteratively reweighted): each frame is weighted by the
    inverse of the take's power in that bin, then of what the previous fit leaves there, so the fit
    rests on the bins and moments where the voice is absent (the voice is uncorrelated with the
    backing: it is the fit's noise, not its target; this is the double-talk handling). Each
    bin's filter is then shrunk by how far its explained share stands above the share a filter of
    that size explains by chance, so a take without bleed (headphones) gets no filter at all.
    A last pass measures what the filter leaves in the take's quietest moments (the residual the
    suppressor of :class:`BleedCanceller` removes). ``frame_stride`` fits on every n-th frame
    only; by default a long take uses up to every 4th (frames overlap by three quarters, so
    little is lost once thousands of them are seen).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> backing = rng.standard_normal(48000 * 4).astype(np.float32) * 0.1
    >>> take = (0.5 * np.roll(backing, 30)).astype(np.float32)
    >>> model = fit_bleed(take, backing, sr=48000)
    >>> model.detected, model.taps
    (True, 14)
    >>> headphones = fit_bleed(rng.standard_normal(48000 * 4).astype(np.float32) * 0.1, backing, sr=48000)
    >>> headphones.detected
    False
    """
    take = np.asarray(take, np.float32)
    if take.ndim != 1:
        raise RenderError(f"fit_bleed: take must be mono (samples,), got shape {take.shape}")
    if min(tail_ms, frame_ms) <= 0 or lead_ms < 0:
        raise RenderError(f"fit_bleed: frame_ms={frame_ms} and tail_ms={tail_ms} must be positive, lead_ms={lead_ms} >= 0")
    ref = _Reference(reference)
    n_fft, hop = _frame_params(sr, frame_ms)
    lead = int(round(lead_ms * 1e-3 * sr / hop))
    taps = max(1, int(round(tail_ms * 1e-3 * sr / hop))) + lead
    src = _FrameSource(ref, n_fft, hop, taps, lead)
    bins = n_fft // 2 + 1
    n_frames = (take.shape[-1] + src.pad) // hop + 1
    # The first fit (weights 1/|take|^2) decides whether there is bleed: its explained share is
    # not biased by reweighting towards the frames a chance fit happens to explain. A share of 3x
    # what a filter of this size explains by chance is 5 standard deviations above chance.
    if frame_stride is None:
        # Past ~8000 equations per bin the fit has converged (measured on 3-minute takes: every 4th
        # frame removes 0.3 dB less bleed in the pauses than all of them, at a third of the cost);
        # at a stride above 4 frames would no longer overlap and samples would be skipped.
        frame_stride = int(min(4, max(1, n_frames // _FIT_FRAMES)))
    if frame_stride < 1:
        raise RenderError(f"fit_bleed: frame_stride={frame_stride} must be a whole number >= 1")
    h, explained = _weighted_fit(take, src, bins, n_frames, chunk_frames, None, frame_stride)
    chance = taps / max(-(-n_frames // frame_stride), 1)
    detected = bool(np.mean(explained > 3.0 * chance) > 0.1)
    for _ in range(max(1, int(iterations)) - 1 if detected else 0):
        h, explained = _weighted_fit(take, src, bins, n_frames, chunk_frames, h, frame_stride)
    shrink = np.clip(1.0 - 8.0 * chance / np.maximum(explained, 1e-12), 0.0, 1.0)
    h = (h * shrink[:, None]).astype(np.complex64)
    if not detected:
        h[:] = 0.0
    model = BleedModel(sr=sr, n_fft=n_fft, hop=hop, lead=lead, filters=h, residual=np.zeros(bins, np.float32),
                       explained=explained.astype(np.float32), detected=detected)
    if detected:
        model.residual = _residual_level(take, src, model, n_frames, chunk_frames)
    return model


def _weighted_fit(take: np.ndarray, src: _FrameSource, bins: int, n_frames: int, chunk_frames: int,
                  previous: np.ndarray | None, stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """One weighted least-squares pass; weights 1/|take|^2, or 1/|what the previous fit leaves|^2.

    Only every ``stride``-th frame enters the sums: at a quarter-frame hop neighbouring frames share
    three quarters of their samples, so every second one carries nearly all of the information.
    """
    taps = src.taps
    previous32 = previous.astype(np.complex64) if previous is not None else None
    gram = np.zeros((bins, taps, taps), np.complex128)
    cross = np.zeros((bins, taps), np.complex128)
    take_power = np.zeros(bins)
    for m0 in range(0, n_frames, chunk_frames):
        m = min(chunk_frames, n_frames - m0)
        y = src.take_frames(take, m0, m)[::stride].T  # (bins, m')
        # (bins, taps, m'): the bin-major layout makes every product below a batched matrix product
        xb = np.ascontiguousarray(np.transpose(src.reference_windows(m0, m)[::stride], (1, 2, 0)))
        p = np.abs(y) ** 2
        if previous32 is not None:
            # what the voice (and noise) leaves once the bleed is cancelled: the fit's own noise
            est = np.einsum("ktm,kt->km", xb, previous32)  # (bins, m')
            q = np.abs(y - est) ** 2 + 1e-2 * np.abs(est) ** 2
        else:
            q = p
        w = 1.0 / (q + 1e-3 * np.mean(q, axis=1, keepdims=True) + 1e-14)  # (bins, m')
        xbw = np.conj(xb)
        xbw *= w[:, None, :].astype(np.float32)
        gram += np.matmul(xbw, np.transpose(xb, (0, 2, 1)))
        cross += np.matmul(xbw, y[:, :, None])[..., 0]
        take_power += (w * p).sum(axis=1)
    load = 1e-4 * np.trace(gram, axis1=1, axis2=2).real / taps + 1e-20
    h = np.linalg.solve(gram + load[:, None, None] * np.eye(taps)[None], cross[..., None])[..., 0]
    explained = np.einsum("kt,ktu,ku->k", h.conj(), gram, h).real / np.maximum(take_power, 1e-20)
    return h, explained


def _predict(windows: np.ndarray, filters: np.ndarray) -> np.ndarray:
    """The bleed the filters predict, ``(m, bins)``, from ``(m, bins, taps)`` reference windows."""
    return np.einsum("mkt,kt->mk", windows, filters)


#: Smoothing of the bleed estimate's power for the residual model (the room's tail), seconds.
_TAIL_S = 0.08
#: Smoothing of the cancelled take's power for the suppressor, seconds.
_ERROR_S = 0.012


def _smoothing(seconds: float, hop: int, sr: int) -> float:
    return float(math.exp(-hop / (seconds * sr)))


def _residual_level(take: np.ndarray, src: _FrameSource, model: BleedModel, n_frames: int, chunk_frames: int) -> np.ndarray:
    """Per bin, the 25th percentile over the bleed's strong frames of (cancelled power / smoothed estimate)."""
    bins = model.filters.shape[0]
    a_tail = _smoothing(_TAIL_S, model.hop, model.sr)
    edges = np.arange(-60.0, 41.0, 1.0)
    hist = np.zeros((bins, edges.size + 1))
    zi = np.zeros((1, bins))
    for m0 in range(0, n_frames, chunk_frames):
        m = min(chunk_frames, n_frames - m0)
        y = src.take_frames(take, m0, m)
        est = _predict(src.reference_windows(m0, m), model.filters)
        smooth, zi = dsp.lfilter([1.0 - a_tail], [1.0, -a_tail], np.abs(est) ** 2, zi, axis=0)
        err = np.abs(y - est) ** 2
        ratio_db = 10.0 * np.log10((err + 1e-20) / (smooth + 1e-20))
        strong = smooth > 1e-12
        # histogram per bin of the frames where the bleed is audible, all bins in one count
        idx = np.digitize(ratio_db, edges) + np.arange(bins)[None, :] * (edges.size + 1)
        hist += np.bincount(idx[strong], minlength=bins * (edges.size + 1)).reshape(bins, edges.size + 1)
    cdf = np.cumsum(hist, axis=1)
    total = cdf[:, -1:]
    q = np.argmax(cdf >= 0.25 * np.maximum(total, 1), axis=1)
    level_db = np.where(total[:, 0] > 0, edges[np.clip(q - 1, 0, edges.size - 1)] + 0.5, -60.0)
    # What is left of the bleed is at most the bleed estimate itself: where the filter is tiny (no
    # bleed in that bin) a larger ratio is the voice or noise, which the suppressor must not touch.
    level_db = np.minimum(level_db, 0.0)
    return (10.0 ** (level_db / 10.0)).astype(np.float32)


@dataclass
class BleedCanceller(Stage):
    """Remove the backing's bleed from a take with the aligned backing as the reference.

    Two steps per STFT frame (21 ms, 75 % overlap): the bleed the :class:`BleedModel` predicts from
    the reference is subtracted (a linear, frequency-domain echo canceller), then a residual-bleed
    suppressor lowers each bin by the share of its power that is left-over bleed (the model's
    residual level times the estimate's power smoothed over the room's tail, ``over`` times, never
    below ``-max_suppression_db``). Voice bins stand far above the left-over bleed and pass
    untouched; pauses lose the rest of the bleed. ``reference`` is the backing on the take's
    timeline (array or block reader, mono or stereo); ``model`` comes from :func:`fit_bleed`.
    As a stage it returns its output ``latency_samples(sr)`` late; :meth:`cancel` is the aligned
    offline form.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> sr = 48000
    >>> backing = (0.1 * rng.standard_normal(3 * sr)).astype(np.float32)
    >>> take = (0.3 * np.roll(backing, 40)).astype(np.float32)
    >>> stage = BleedCanceller(reference=backing, model=fit_bleed(take, backing, sr=sr))
    >>> out = stage.cancel(take, sr)
    >>> bool(20 * np.log10(np.std(out[sr:]) / np.std(take[sr:])) < -20)
    True
    """

    reference: Any = field(default=None, repr=False)
    model: BleedModel | None = field(default=None, repr=False)
    over: float = 4.0
    max_suppression_db: float = 30.0

    def describe(self) -> dict[str, Any]:
        return {"stage": self.name, "over": self.over, "max_suppression_db": self.max_suppression_db,
                "detected": bool(self.model.detected) if self.model is not None else False}

    def _check(self, sr: int) -> BleedModel:
        if self.model is None or self.reference is None:
            raise RenderError("BleedCanceller: needs reference= (the aligned backing) and model= (from fit_bleed)")
        if self.model.sr != sr:
            raise RenderError(f"BleedCanceller: the model was fitted at {self.model.sr} Hz, the audio is at {sr} Hz; refit it")
        if self.over < 0 or self.max_suppression_db < 0:
            raise RenderError(f"BleedCanceller: over={self.over} and max_suppression_db={self.max_suppression_db} must be >= 0")
        return self.model

    def latency_samples(self, sr: int) -> int:
        """Streaming delay: one frame."""
        return self.model.n_fft if self.model is not None else 0

    def reset(self) -> None:
        self._stream: dict[str, Any] | None = None
        self._companions: list[np.ndarray] = []

    def __post_init__(self) -> None:
        self.reset()

    def process(self, audio: np.ndarray, sr: int) -> np.ndarray:
        """Streaming form: returns the cleaned audio :meth:`latency_samples` late (mono or each channel alike)."""
        x = audio if audio.ndim == 2 else audio[None, :]
        self._feed(x, sr)
        y = self._stream["delay"].pop(x.shape[1])[: x.shape[0]]  # type: ignore[index]
        return y if audio.ndim == 2 else y[0]

    def _feed(self, x: np.ndarray, sr: int) -> None:
        model = self._check(sr)
        st = self._stream
        if st is None:
            src = _FrameSource(_Reference(self.reference), model.n_fft, model.hop, model.taps, model.lead)
            bins = model.n_fft // 2 + 1
            st = self._stream = {
                "src": src, "m": 0, "channels": x.shape[0],
                "pending": np.zeros((x.shape[0], src.pad), np.float32),  # the frames before the take
                "ola": np.zeros((x.shape[0] * (1 + len(self._companions)), src.pad), np.float32),
                "zi_tail": np.zeros((1, x.shape[0], bins)), "zi_err": np.zeros((1, x.shape[0], bins)),
                "delay": OutputDelay(x.shape[0] * (1 + len(self._companions)), model.n_fft), "drop": src.pad,
            }
        elif st["channels"] != x.shape[0]:
            raise RenderError(f"BleedCanceller: a streaming block of {x.shape[0]} channel(s) does not continue the stream; "
                              "call with reset=True")
        buf = np.concatenate([st["pending"], x], axis=1)
        n_fft, hop = model.n_fft, model.hop
        m = (buf.shape[1] - n_fft) // hop + 1 if buf.shape[1] >= n_fft else 0
        if m > 0:
            self._frames(buf, st, m, sr)
            st["pending"] = buf[:, m * hop :].copy()
        else:
            st["pending"] = buf

    def _frames(self, buf: np.ndarray, st: dict[str, Any], m: int, sr: int) -> None:
        model: BleedModel = self.model  # type: ignore[assignment]
        src: _FrameSource = st["src"]
        n_fft, hop, m0 = model.n_fft, model.hop, st["m"]
        win = src.window
        est = _predict(src.reference_windows(m0, m), model.filters)[None]  # (1, m, bins)
        y = np.stack([_stft_frames(ch[: (m - 1) * hop + n_fft], n_fft, hop, win) for ch in buf])  # (ch, m, bins)
        err = y - est
        a_tail, a_err = _smoothing(_TAIL_S, hop, sr), _smoothing(_ERROR_S, hop, sr)
        tail, st["zi_tail"] = dsp.lfilter([1.0 - a_tail], [1.0, -a_tail], np.abs(np.broadcast_to(est, err.shape)) ** 2,
                                          st["zi_tail"], axis=1)
        power, st["zi_err"] = dsp.lfilter([1.0 - a_err], [1.0, -a_err], np.abs(err) ** 2, st["zi_err"], axis=1)
        floor = db_to_gain(-self.max_suppression_db)
        gain = np.clip(1.0 - self.over * model.residual * tail / (power + 1e-20), floor, 1.0).astype(np.float32)
        spectra = [err * gain]
        base = st["m"] * hop - src.pad
        for comp in self._companions:  # measurement: the same gains on other signals (e.g. the voice alone)
            seg = np.zeros((m - 1) * hop + n_fft, np.float32)
            a, b = max(base, 0), min(base + seg.size, comp.shape[-1])
            if b > a:
                seg[a - base : b - base] = comp[a:b]
            spectra.append(_stft_frames(seg, n_fft, hop, win)[None] * gain)
        frames = sfft.irfft(np.concatenate(spectra, axis=0), n=n_fft, axis=-1).astype(np.float32) * (win / 1.5)
        # overlap-add (n_fft is 4 hops): frame j's sample i lands at j * hop + i; the tail carried
        # from the last call starts at 0, and what passes m * hop is carried to the next
        total = np.zeros((frames.shape[0], (m - 1) * hop + n_fft), np.float32)
        total[:, : src.pad] = st["ola"]
        for q in range(n_fft // hop):
            total[:, q * hop : q * hop + m * hop] += frames[:, :, q * hop : (q + 1) * hop].reshape(frames.shape[0], m * hop)
        out = total[:, : m * hop]
        st["ola"] = total[:, m * hop :].copy()
        drop = min(st["drop"], out.shape[1])
        st["drop"] -= drop
        st["delay"].push(out[:, drop:])
        st["m"] += m

    def cancel(self, take: np.ndarray, sr: int, *, companions: tuple[np.ndarray, ...] = (),
               out: np.ndarray | None = None, block: int = 1 << 16) -> np.ndarray | tuple[np.ndarray, ...]:
        """The whole take cleaned and aligned with its input: the offline form (mono take).

        ``out`` (float32, the take's shape, may be the take itself) receives the result.
        ``companions`` (measurement): signals on the take's timeline that get the same suppressor
        gains but no subtraction, e.g. the voice alone, to tell what the stage did to the voice;
        with them, returns ``(cleaned, *companions_out)``.
        """
        model = self._check(sr)
        take = np.asarray(take, np.float32)
        if take.ndim != 1:
            raise RenderError(f"BleedCanceller.cancel: take must be mono (samples,), got shape {take.shape}")
        n = take.shape[0]
        late = model.n_fft
        if out is not None and (out.shape != take.shape or out.dtype != np.float32):
            raise RenderError(f"BleedCanceller.cancel: out must be float32 {take.shape}, got {out.dtype} {out.shape}")
        # Without companions the result goes straight into out (may be the take itself: a sample
        # is written only after the block holding it was read), so no second take-length array
        # exists; with them, one row per signal.
        rows = [np.empty(n, np.float32) if out is None else out] if not companions else None
        result = np.empty((1 + len(companions), n), np.float32) if companions else None
        self.reset()
        self._companions = [np.asarray(c, np.float32) for c in companions]
        src_len = n + late
        written = 0
        for a in range(0, src_len, block):
            b = min(a + block, src_len)
            piece = np.zeros(b - a, np.float32)
            if a < n:
                piece[: min(b, n) - a] = take[a : min(b, n)]
            self._feed(piece[None, :], sr)
            st = self._stream
            assert st is not None
            # take everything finished so far from the delay line (all rows)
            ready = st["delay"].held
            got = st["delay"].pop(ready)
            lo = written - late
            keep_from = max(0, -lo)
            dst_lo = max(lo, 0)
            chunk = got[:, keep_from:]
            dst_hi = min(dst_lo + chunk.shape[1], n)
            if dst_hi > dst_lo:
                if rows is not None:
                    rows[0][dst_lo:dst_hi] = chunk[0, : dst_hi - dst_lo]
                else:
                    result[:, dst_lo:dst_hi] = chunk[:, : dst_hi - dst_lo]  # type: ignore[index]
            written += ready
        self.reset()
        if rows is not None:
            return rows[0]
        assert result is not None
        if out is not None:
            out[...] = result[0]
        return (result[0] if out is None else out, *result[1:])


def _mean_power(x: np.ndarray, block: int = 1 << 16) -> float:
    """Mean square of ``x`` in float64, a block at a time (no take-length float64 temporary)."""
    total = 0.0
    for a in range(0, x.size, block):
        seg = x[a : a + block].astype(np.float64)
        total += float(np.dot(seg, seg))
    return total / max(x.size, 1)


def _sounding_end(x: np.ndarray, block: int = 1 << 16) -> int:
    """One past the last non-zero sample of ``x`` (0 when it is all digital silence)."""
    end = x.size
    while end > 0:
        seg = x[max(0, end - block) : end]
        nonzero = np.flatnonzero(seg)
        if nonzero.size:
            return end - seg.size + int(nonzero[-1]) + 1
        end -= seg.size
    return 0


def remove_bleed(take: np.ndarray, reference: Any, *, sr: int, in_place: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
    """Fit and remove the backing's bleed from a mono take; returns the take and an action for the report.

    ``reference`` is the backing on the take's timeline (array or block reader, read in blocks:
    the backing is never held in memory whole). Without bleed (a headphone take) the take comes
    back unchanged and the action says ``detected: False``. With ``in_place=True`` a C-contiguous
    float32 take is overwritten.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(2)
    >>> backing = (0.1 * rng.standard_normal(2 * 48000)).astype(np.float32)
    >>> y, action = remove_bleed(0.2 * backing, backing, sr=48000)
    >>> action["action"], action["detected"], action["removed_db"] > 20
    ('bleed_removal', True, True)
    """
    x = np.asarray(take, dtype=np.float32)
    if x.ndim != 1:
        raise RenderError(f"remove_bleed: take must be mono (samples,), got shape {x.shape}")
    # A take that ends before the backing is padded with digital silence to the backing's length;
    # there the backing plays into a take that holds nothing, which the fit's 1/|take|^2 weights
    # would take as "no bleed at all". Fit and cancel over the take's sounding extent only.
    end = _sounding_end(x)
    if end < sr // 10:  # (almost) nothing sounding: nothing to fit
        return x, {"action": "bleed_removal", "detected": False, "removed_db": 0.0}
    body = x[:end]
    model = fit_bleed(body, reference, sr=sr)
    action: dict[str, Any] = {"action": "bleed_removal", "detected": model.detected, "removed_db": 0.0}
    if not model.detected:
        return x, action
    out = x if (in_place and x is take and x.flags.c_contiguous and x.flags.writeable) else None
    if out is None and end < x.size:
        out = x.copy()
    before = _mean_power(body)
    before_db = block_power_db(x, sr=sr)  # render/pauses.py: the pauses' level for the report
    stage = BleedCanceller(reference=reference, model=model)
    cleaned_body = stage.cancel(body, sr, out=None if out is None else out[:end])
    assert isinstance(cleaned_body, np.ndarray)
    after = _mean_power(cleaned_body)
    cleaned = cleaned_body if out is None else out
    action.update(pause_levels(before_db, block_power_db(cleaned, sr=sr)))
    action.update({"removed_db": round(10.0 * math.log10((before + 1e-20) / (after + 1e-20)), 2),
                   "filter_ms": round(1e3 * model.taps * model.hop / sr, 1), "over": stage.over,
                   "max_suppression_db": stage.max_suppression_db})
    return cleaned, action
