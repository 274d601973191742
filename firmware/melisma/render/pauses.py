"""How loud the singer's pauses are, before and after a clean-up step (for the report and its picture).

The take is cut into 50 ms blocks; a block is a pause when, *after* the step, it lies more than
``pause_below_db`` under the loud blocks (95th percentile) and nearer the quiet ones (5th
percentile) than the loud ones (blocks of digital silence, such as the
padding that lines a take up, are no pauses): the step has made the pauses easier to
find, not harder. Before and after are then the mean power of the same blocks (dBFS), so the
difference is what the step took out of the pauses (bleed, noise), and the same over the voiced
blocks says what it did under the voice (the voice and what is left of the bleed and noise).

Only block powers are kept (a 3-minute take: 3600 numbers), never a copy of the take.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> x = (0.01 * rng.standard_normal(48000)).astype(np.float32)
>>> x[:24000] += np.sin(np.arange(24000) / 8).astype(np.float32)
>>> before = block_power_db(x, sr=48000)
>>> y = x.copy(); y[24000:] *= 0.1
>>> levels = pause_levels(before, block_power_db(y, sr=48000))
>>> round(levels["pauses_before_dbfs"] - levels["pauses_after_dbfs"])
20
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Block length (ms) of the level measurement.
BLOCK_MS = 50.0
#: A block this far under the loud blocks (after the step) is a pause.
PAUSE_BELOW_DB = 10.0


def block_power_db(x: np.ndarray, *, sr: int, block_ms: float = BLOCK_MS) -> np.ndarray:
    """Mean power of each ``block_ms`` block of a mono signal, in dBFS (float32, one per block)."""
    x = np.asarray(x)
    block = max(1, int(round(sr * block_ms / 1000.0)))
    n = x.shape[-1] // block
    if n == 0:
        return np.zeros(0, np.float32)
    power = np.empty(n)
    step = max(1, (1 << 20) // block)  # blocks at a time: float64 temporaries stay a few MB
    for i in range(0, n, step):
        seg = x[i * block:min(n, i + step) * block].astype(np.float64).reshape(-1, block)
        power[i:i + seg.shape[0]] = np.mean(seg * seg, axis=1)
    return (10.0 * np.log10(power + 1e-12)).astype(np.float32)


def pause_levels(before_db: np.ndarray, after_db: np.ndarray, *, pause_below_db: float = PAUSE_BELOW_DB) -> dict[str, Any]:
    """Levels (dBFS) in the pauses and under the voice, before and after a step; see the module.

    Returns ``pauses_before_dbfs``, ``pauses_after_dbfs``, ``voice_before_dbfs``,
    ``voice_after_dbfs`` (None where there are no such blocks) and ``pause_fraction``.
    """
    n = min(before_db.size, after_db.size)
    out: dict[str, Any] = {"pauses_before_dbfs": None, "pauses_after_dbfs": None, "voice_before_dbfs": None,
                           "voice_after_dbfs": None, "pause_fraction": 0.0}
    if n == 0:
        return out
    b, a = before_db[:n].astype(np.float64), after_db[:n].astype(np.float64)
    live = (a > -110.0) & (b > -110.0)  # digital silence (padding, not a pause) is left out
    if not live.any():
        return out
    loud, floor = (float(v) for v in np.percentile(a[live], [95, 5]))
    pause = live & (a < min(loud - pause_below_db, 0.5 * (loud + floor)))
    voice = ~pause & live

    def mean_db(v: np.ndarray, m: np.ndarray) -> float | None:
        return round(float(10 * np.log10(np.mean(10 ** (v[m] / 10)))), 1) if m.any() else None

    out.update(pauses_before_dbfs=mean_db(b, pause), pauses_after_dbfs=mean_db(a, pause),
               voice_before_dbfs=mean_db(b, voice), voice_after_dbfs=mean_db(a, voice),
               pause_fraction=round(float(pause.mean()), 3))
    return out
