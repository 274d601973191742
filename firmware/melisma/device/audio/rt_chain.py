"""The vocal chain for the audio callback: the engine's own stages, run on preallocated buffers.

The engine's chain (:func:`melisma.render.chain.build_vocal_chain`) is written for whole takes:
per call it validates its input, designs or fetches filters, and allocates a dozen temporaries.
For a 128-frame block that overhead is most of the work: measured per block (48 kHz, 128
frames, ``tools/bench_audio.py --stages``) the bandwidth extender spent ~210 µs, nearly all of it
in five :func:`scipy.signal.sosfilt` calls of ~40-70 µs each (argument checks in Python around a
3 µs kernel), and the de-esser ~80 µs.

:class:`RtChain` wraps a built chain and runs each stage's own arithmetic per block with

- scipy's compiled second-order-section kernel (the one :func:`scipy.signal.sosfilt` calls)
  filtering in place, on buffers allocated once per block size;
- the stage's own state (filter memories, envelopes, block accumulators) read and written in the
  wrapped stage object itself, so the reference path (``stage(x, sr, reset=False)``) and this one
  can take turns on the same stream;
- ufuncs with ``out=`` in place of temporaries, and the per-detector-block bookkeeping in
  scalars (at 128 frames a block completes 0-2 detector blocks of 2 ms / 5 ms).

Stages it has no fast path for (the pedalboard EQ/compressor, the reverb and echo, whose work is
in C++ already) run through their ordinary call. The reference path stays the specification:
``tests/melisma/device/audio/test_rt_chain.py`` streams the same signal through both and requires
the same output (to float32 rounding).

Examples
--------
>>> import numpy as np
>>> from melisma.device.audio.monitor import live_chain
>>> sr = 48000
>>> x = (0.2 * np.sin(2 * np.pi * 220 * np.arange(sr // 4) / sr)).astype(np.float32)
>>> ref, fast = live_chain("cpop", sample_rate=sr), RtChain(live_chain("cpop", sample_rate=sr), sr, 128)
>>> _ = ref(np.zeros(128, np.float32), sr, reset=True)
>>> fast.reset()
>>> a = np.concatenate([ref(x[i:i + 128], sr, reset=False) for i in range(0, len(x), 128)], axis=1)
>>> b = np.concatenate([fast(x[i:i + 128]).copy() for i in range(0, len(x), 128)], axis=1)
>>> bool(np.max(np.abs(a - b)) < 1e-5)
True
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ... import dsp
from ...render.chain import DeEsser
from ...render.exciter import BandwidthExtender


def _sosfilt_inplace(sos: np.ndarray, y: np.ndarray, state: np.ndarray) -> None:
    """Filter ``y`` ((1, n), C-contiguous) in place; ``state`` ((1, sections, 2)) is updated in place.

    scipy's compiled kernel through :func:`melisma.dsp.sosfilt_inplace`, loaded without importing
    scipy.signal (whose import would add ~50 MB to the box's service).
    """
    dsp.sosfilt_inplace(sos, y, state)


class RtDeEsser:
    """:class:`melisma.render.chain.DeEsser` on one mono block, in place (same result as the stage's call)."""

    def __init__(self, stage: DeEsser, sample_rate: int, frames: int):
        self.stage = stage
        self.sr = int(sample_rate)
        sos_band, sos_ap, sos_det = stage._design(self.sr)
        self._sos = (np.ascontiguousarray(sos_det, np.float32), np.ascontiguousarray(sos_band, np.float32),
                     np.ascontiguousarray(sos_ap, np.float32))
        self.block = max(1, int(round(self.sr * stage.block_ms / 1000.0)))
        self._ramp = np.arange(self.block, dtype=np.float32) / np.float32(self.block)
        self.a_att = math.exp(-self.block / (self.sr * stage.attack_ms / 1000.0))
        self.a_rel = math.exp(-self.block / (self.sr * stage.release_ms / 1000.0))
        self._alloc(frames)

    def _alloc(self, n: int) -> None:
        self.n = n
        self._det = np.zeros((1, n), np.float32)
        self._band = np.zeros((1, n), np.float32)
        self._y = np.zeros((1, n), np.float32)
        self._pow = np.zeros(n, np.float32)
        self._cut = np.zeros(n, np.float32)

    def _state_views(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        s = self.stage
        if s._zi is None or s._zi.shape[1] != 1:
            return None
        return (s._zi_det.reshape(1, -1, 2), s._zi.reshape(1, -1, 2), s._zi_ap.reshape(1, -1, 2))

    def process(self, x: np.ndarray) -> np.ndarray:
        """De-ess the mono float32 block ``x``; returns a view of a preallocated buffer."""
        s = self.stage
        n = x.shape[0]
        views = self._state_views()
        if views is None or n == 0:  # the stage has not streamed yet: its own call sets its state up
            return s(x, self.sr, reset=False)
        if n != self.n:
            self._alloc(n)
        z_det, z_band, z_ap = views
        if not (z_det.base is not None and np.shares_memory(z_det, s._zi_det)):  # pragma: no cover - numpy gave a copy
            return s(x, self.sr, reset=False)
        sos_det, sos_band, sos_ap = self._sos
        det, band, y = self._det, self._band, self._y
        det[0] = x
        band[0] = x
        y[0] = x
        _sosfilt_inplace(sos_det, det, z_det)
        _sosfilt_inplace(sos_band, band, z_band)
        _sosfilt_inplace(sos_ap, y, z_ap)
        power = np.multiply(det[0], det[0], out=self._pow)
        block, pos0 = self.block, s._pos
        first = block - pos0
        gains = s._gains
        g_prev2, g_prev1 = gains[0], gains[1]
        new: list[float] = []
        if first <= n:
            ends = list(range(first, n + 1, block))
            starts = [0, *ends[:-1]]
            env = s._env_db
            last = len(ends) - 1
            rest = float(power[ends[-1]:].sum(dtype=np.float64))
            for k in range(len(ends)):
                # as np.add.reduceat in the stage: float32 sums, the last one to the end of the block
                seg = power[starts[k]:(ends[k] if k < last else n)]
                total = float(np.float64(seg.sum()))
                if k == 0:
                    total += s._acc
                if k == last:
                    total -= rest
                level = 10.0 * math.log10(max(total / block, 1e-20))
                coef = self.a_att if level > env else self.a_rel
                env = coef * env + (1.0 - coef) * level
                red = min(s.max_reduction_db, max(0.0, (env - s.threshold_db) * (1.0 - 1.0 / s.ratio)))
                new.append(float(np.float32(10.0 ** (-red / 20.0))))
            s._env_db = env
            s._acc, s._pos = rest, n - ends[-1]
        else:
            s._acc += float(power.sum(dtype=np.float64))
            s._pos += n
        hist = [float(np.float32(g_prev2)), float(np.float32(g_prev1)), *new]
        s._gains = hist[-2:]
        if all(g == 1.0 for g in hist):
            return y[0]
        # per sample: the gain ramps from that of block k-2 to that of block k-1 (as in the stage)
        cut = self._cut
        n_blocks = (pos0 + n + block - 1) // block
        for k in range(n_blocks):
            a = max(0, k * block - pos0)
            b = min(n, (k + 1) * block - pos0)
            o = a + pos0 - k * block
            g0, g1 = np.float32(hist[k]), np.float32(hist[k + 1])
            seg = cut[a:b]
            np.multiply(self._ramp[o:o + (b - a)], g1 - g0, out=seg)
            seg += g0
        np.subtract(np.float32(1.0), cut, out=cut)
        band0 = band[0]
        band0 *= cut
        y0 = y[0]
        y0 -= band0
        return y0


class RtBandwidthExtender:
    """:class:`melisma.render.exciter.BandwidthExtender` on one mono block (same result as the stage's call)."""

    KEYS = ("source", "shape", "present", "voice", "presence")

    def __init__(self, stage: BandwidthExtender, sample_rate: int, frames: int):
        self.stage = stage
        self.sr = int(sample_rate)
        filters = stage._design(self.sr)
        self._sos = {k: np.ascontiguousarray(filters[k], np.float64) for k in self.KEYS}
        self.block = max(1, int(round(self.sr * stage.block_ms / 1000.0)))
        self._ramp = np.arange(self.block) / self.block
        self._alloc(frames)

    def _alloc(self, n: int) -> None:
        self.n = n
        self._f = {k: np.zeros((1, n), np.float64) for k in self.KEYS}
        self._powers = np.zeros((5, n), np.float64)
        self._gain = np.zeros(n, np.float64)
        self._out = np.zeros(n, np.float32)

    def process(self, x: np.ndarray) -> np.ndarray:
        """Add the generated top octave to the mono float32 block ``x``; returns ``x`` or a preallocated buffer."""
        s = self.stage
        n = x.shape[0]
        if s._zi is None or s._acc is None or n == 0:
            return s(x, self.sr, reset=False)
        if n != self.n:
            self._alloc(n)
        f, sos, zi = self._f, self._sos, s._zi
        src = f["source"]
        src[0] = x
        _sosfilt_inplace(sos["source"], src, zi["source"].reshape(1, -1, 2))
        gen = f["shape"]
        np.abs(src, out=gen)
        _sosfilt_inplace(sos["shape"], gen, zi["shape"].reshape(1, -1, 2))
        for key in ("present", "voice", "presence"):
            buf = f[key]
            buf[0] = x
            _sosfilt_inplace(sos[key], buf, zi[key].reshape(1, -1, 2))
        powers = self._powers
        for i, key in enumerate(self.KEYS):
            np.multiply(f[key][0], f[key][0], out=powers[i])
        block, pos0 = self.block, s._pos
        first = block - pos0
        if first <= n:
            ends = np.arange(first, n + 1, block)
            starts = np.concatenate(([0], ends[:-1]))
            sums = np.add.reduceat(powers, starts, axis=1)
            sums[:, 0] += s._acc
            rest = powers[:, ends[-1]:].sum(axis=1)
            sums[:, -1] -= rest
            s._acc, s._pos = rest, n - int(ends[-1])
            block_gains = s._block_gains(sums / block, block, self.sr).tolist()
        else:
            s._acc = s._acc + powers.sum(axis=1)
            s._pos += n
            block_gains = []
        hist = [float(s._gains[0]), float(s._gains[1]), *block_gains]
        s._gains = hist[-2:]
        if not any(hist):
            return x
        gain = self._gain
        n_blocks = (pos0 + n + block - 1) // block
        for k in range(n_blocks):
            a = max(0, k * block - pos0)
            b = min(n, (k + 1) * block - pos0)
            o = a + pos0 - k * block
            g0, g1 = hist[k], hist[k + 1]
            seg = gain[a:b]
            np.multiply(self._ramp[o:o + (b - a)], g1 - g0, out=seg)
            seg += g0
        gain *= gen[0]
        out = self._out
        np.copyto(out, gain, casting="same_kind")
        out += x
        return out


class RtChain:
    """A built vocal chain run block by block in the callback (see the module docstring).

    Parameters
    ----------
    chain : melisma.render.stages.Chain
        From :func:`melisma.render.chain.build_vocal_chain` (mono in, ``(2, n)`` out).
    sample_rate, frames : int
        The stream's rate and block size (buffers are allocated for it; another size
        reallocates once).
    """

    def __init__(self, chain: Any, sample_rate: int, frames: int):
        self.chain = chain
        self.sr = int(sample_rate)
        self.frames = int(frames)
        self.steps: list[Any] = []
        for stage in getattr(chain, "stages", [chain]):
            if type(stage) is DeEsser:
                self.steps.append(RtDeEsser(stage, self.sr, self.frames).process)
            elif type(stage) is BandwidthExtender:
                self.steps.append(RtBandwidthExtender(stage, self.sr, self.frames).process)
            else:
                self.steps.append(_plain(stage, self.sr))

    @property
    def fast_stages(self) -> int:
        """How many stages run on a fast path."""
        return sum(1 for s in self.steps if not isinstance(s, _plain))

    def reset(self) -> None:
        """Reset the chain and run it once on a silent block (sets every stage's state up)."""
        self.chain(np.zeros(self.frames, np.float32), self.sr, reset=True)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Run one mono float32 block; returns ``(2, n)`` float32 (valid until the next call)."""
        a = x
        for step in self.steps:
            a = step(a)
        return a


class _plain:
    """A stage through its ordinary streaming call."""

    def __init__(self, stage: Any, sr: int):
        self.stage, self.sr = stage, sr

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.stage(x, self.sr, reset=False)
