"""Vocal/backing balance: the processed vocal's loudness set against the backing as the style asks.

:func:`balance` sets the loudness of the processed vocal relative to the backing as placed in the
mix (``vocal_to_backing_lu``, BS.1770 integrated loudness of each) and can dip the backing's
presence band while the voice sings (:class:`~melisma.render.ducker.Ducker`). The backing keeps
its own level; only the vocal moves (the master normalises the sum afterwards). :func:`balance_into`
does the same in place, block by block, for the lean render path. Both check their inputs, measure
the vocal once (a :class:`~melisma.analysis.loudness.LoudnessMeter`: the placed vocal's loudness is
read from it at the chosen gain, not measured again) and report through the same helpers.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..analysis.loudness import CHUNK_SAMPLES, LoudnessMeter, integrated_lufs
from ..errors import RenderError
from .ducker import Ducker
from .stages import as_2d, check_finite, db_to_gain


def balance(
    vocal: np.ndarray, backing: np.ndarray, *, sr: int, vocal_to_backing_lu: float, duck_db: float = 0.0
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Place the vocal against the backing at a loudness ratio, optionally ducking the backing.

    The backing keeps its level (it is usually a finished master) apart from the optional
    presence-band dip; the vocal gain is set so that integrated loudness (BS.1770) of the vocal
    minus that of the backing as placed (after ducking) equals ``vocal_to_backing_lu``. The
    ratio is then measured on the placed signals and reported.

    Parameters
    ----------
    vocal, backing : (2, n) (or (n,)) float32, aligned, same shape.
    sr : sample rate, Hz.
    vocal_to_backing_lu : wanted vocal loudness minus backing loudness, LU (style preset:
        e.g. +1 for a forward KTV vocal, -2 for a vocal tucked into a band).
    duck_db : largest dip of the backing's 1-4 kHz band while the vocal sings (0: none).

    Returns
    -------
    vocal_placed, backing_placed, report
        ``report`` keys: ``vocal_to_backing_lu`` (measured), ``target_lu``, ``vocal_gain_db``,
        ``backing_gain_db`` (always 0.0), ``vocal_lufs``, ``backing_lufs`` (both as placed),
        ``duck_db`` (asked), ``duck_db_max`` (deepest dip applied), ``duck_active_fraction``,
        ``duck_backing_change_lu`` (loudness the dip took from the backing).

    Raises
    ------
    RenderError
        Mismatched shapes, NaN samples, or a silent vocal or backing (nothing to balance).

    Examples
    --------
    >>> import numpy as np
    >>> sr = 48000
    >>> rng = np.random.default_rng(0)
    >>> vocal = (0.01 * rng.standard_normal((2, 3 * sr))).astype(np.float32)
    >>> backing = (0.1 * rng.standard_normal((2, 3 * sr))).astype(np.float32)
    >>> v, b, report = balance(vocal, backing, sr=sr, vocal_to_backing_lu=2.0)
    >>> round(report["vocal_to_backing_lu"], 1)
    2.0
    """
    vocal = np.asarray(vocal, dtype=np.float32)
    backing = np.asarray(backing, dtype=np.float32)
    if vocal.shape != backing.shape:
        raise RenderError(
            f"balance: vocal {vocal.shape} and backing {backing.shape} must have the same shape; "
            "align and pad them to the same length first"
        )
    _check_target(vocal_to_backing_lu)
    check_finite(vocal, "balance: vocal")
    check_finite(backing, "balance: backing")
    vocal_meter = _measure_vocal(vocal, sr)
    backing_raw_lufs = _check_backing_lufs(integrated_lufs(backing, sr=sr))
    backing_placed, backing_lufs, ducker = backing, backing_raw_lufs, None
    if duck_db > 0.0:
        ducker = _new_ducker(duck_db, vocal, vocal_meter)
        backing_placed = ducker(backing, sr)
        backing_lufs = integrated_lufs(backing_placed, sr=sr)
    vocal_gain_db, report = _placement(vocal_meter, target_lu=vocal_to_backing_lu, duck_db=duck_db,
                                       backing_raw_lufs=backing_raw_lufs, backing_lufs=backing_lufs, ducker=ducker)
    vocal_placed = vocal * np.float32(db_to_gain(vocal_gain_db))
    return vocal_placed, backing_placed, report


def _check_target(vocal_to_backing_lu: float) -> None:
    """The wanted ratio is a finite number within +-30 LU."""
    if not math.isfinite(vocal_to_backing_lu) or abs(vocal_to_backing_lu) > 30.0:
        raise RenderError(
            f"balance: vocal_to_backing_lu={vocal_to_backing_lu} is out of range; use -30 to +30 LU (presets use about -3 to +3)"
        )


def _measure_vocal(vocal: np.ndarray, sr: int) -> LoudnessMeter:
    """The vocal's meter (one K-weighted pass); a silent vocal is refused."""
    meter = LoudnessMeter(sr, channels=as_2d(vocal).shape[0])
    meter.add(vocal)
    if not math.isfinite(meter.integrated_lufs()):
        raise RenderError("balance: the vocal is silent (integrated loudness -inf LUFS); there is nothing to place")
    return meter


def _check_backing_lufs(lufs: float) -> float:
    """The raw backing's loudness, refused when silent."""
    if not math.isfinite(lufs):
        raise RenderError("balance: the backing is silent (integrated loudness -inf LUFS); there is nothing to balance against")
    return float(lufs)


def _new_ducker(duck_db: float, vocal: np.ndarray, vocal_meter: LoudnessMeter) -> Ducker:
    """The backing's ducker keyed by the vocal as given: its threshold is the vocal's loudness - 20 dB, as
    :class:`~melisma.render.ducker.Ducker` works it out, taken from the vocal's meter instead of measured again.
    """
    return Ducker(duck_db=duck_db, sidechain=vocal, threshold_db=vocal_meter.integrated_lufs() - 20.0)


def _placement(vocal_meter: LoudnessMeter, *, target_lu: float, duck_db: float, backing_raw_lufs: float,
               backing_lufs: float, ducker: Ducker | None) -> tuple[float, dict[str, Any]]:
    """The vocal's gain that puts it ``target_lu`` over the backing as placed, and the balance report.

    The placed vocal's loudness is the vocal meter's at that gain (K-weighting is linear, so its hop
    energies are the measured ones times the gain; the gates are worked out again on them).
    """
    vocal_gain_db = target_lu - (vocal_meter.integrated_lufs() - backing_lufs)
    placed_lufs = vocal_meter.integrated_lufs(gain_db=vocal_gain_db)
    report: dict[str, Any] = {
        "target_lu": float(target_lu),
        "duck_db": float(duck_db),
        "duck_db_max": 0.0,
        "duck_active_fraction": 0.0,
        "duck_backing_change_lu": 0.0,
        "vocal_to_backing_lu": placed_lufs - backing_lufs,
        "vocal_gain_db": vocal_gain_db,
        "backing_gain_db": 0.0,
        "vocal_lufs": placed_lufs,
        "backing_lufs": backing_lufs,
    }
    if ducker is not None:
        report.update(
            duck_db_max=round(ducker.max_dip_db, 3),
            duck_active_fraction=round(ducker.active_fraction, 4),
            duck_backing_change_lu=backing_lufs - backing_raw_lufs,
        )
    return vocal_gain_db, report


def _read_block(source: Any, a: int, b: int) -> np.ndarray:
    """Samples a:b of an array or of anything with ``read(start, stop)`` (e.g. audio_io.NpyBlockReader)."""
    if isinstance(source, np.ndarray):
        return np.asarray(source[..., a:b], dtype=np.float32)
    return source.read(a, b)


def balance_into(
    vocal: np.ndarray,
    backing: Any,
    *,
    sr: int,
    vocal_to_backing_lu: float,
    duck_db: float = 0.0,
    out: np.ndarray | None = None,
    backing_lufs: float | None = None,
    block_samples: int = CHUNK_SAMPLES,
    mix_meter: LoudnessMeter | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """:func:`balance` and the sum in one streaming pass: ``out = vocal * gain + ducked backing``.

    Only ``out`` is full length; the placed vocal and backing never exist as arrays. ``out`` may be
    ``vocal`` itself (the sum is then formed in place, and the backing is dipped twice: once to
    measure the ducked backing's loudness, once to form the sum, re-applying the gain curve the
    first pass detected); any other buffer first receives the ducked backing and then the vocal is
    added (the ducker runs once).

    Parameters
    ----------
    vocal : (channels, n) float32 (the processed vocal, usually stereo after the reverb).
    backing : (channels, n) float32 array, or a reader with ``read(start, stop)`` and ``shape``
        (:class:`melisma.audio_io.NpyBlockReader`, which pads with zeros past its end).
    sr, vocal_to_backing_lu, duck_db : as in :func:`balance`.
    out : (channels, n) float32 C-contiguous buffer for the mix; ``None`` allocates one.
    backing_lufs : integrated loudness of the raw backing if already known (skips measuring it).
    block_samples : samples per block.
    mix_meter : an empty :class:`~melisma.analysis.loudness.LoudnessMeter` for the mix's channels
        (``stereo=True`` for two), fed the mix as it is formed: the meter the master then starts from
        (``master_stream(..., meter=mix_meter)``), exactly what :func:`~melisma.render.master.measure_mix`
        would measure, without reading the mix once more.

    Returns
    -------
    mix, report
        The report has the keys of :func:`balance`'s.

    Examples
    --------
    >>> import numpy as np
    >>> sr = 48000
    >>> rng = np.random.default_rng(0)
    >>> vocal = (0.01 * rng.standard_normal((2, 3 * sr))).astype(np.float32)
    >>> backing = (0.1 * rng.standard_normal((2, 3 * sr))).astype(np.float32)
    >>> mix, report = balance_into(vocal, backing, sr=sr, vocal_to_backing_lu=2.0, out=vocal)
    >>> mix is vocal, round(report["vocal_to_backing_lu"], 1)
    (True, 2.0)
    """
    vocal = np.asarray(vocal, dtype=np.float32)
    if vocal.ndim != 2:
        raise RenderError(f"balance_into: vocal must be (channels, samples), got shape {vocal.shape}")
    channels, n = vocal.shape
    backing_shape = tuple(getattr(backing, "shape", ()))
    if len(backing_shape) != 2 or backing_shape[0] != channels:
        raise RenderError(f"balance_into: backing {backing_shape} must have the vocal's {channels} channels")
    if isinstance(backing, np.ndarray) and backing.shape[1] != n:
        raise RenderError(
            f"balance_into: vocal {vocal.shape} and backing {backing.shape} must have the same length; "
            "align and pad them to the same length first"
        )
    _check_target(vocal_to_backing_lu)
    if out is None:
        out = np.empty((channels, n), np.float32)
    elif out.shape != (channels, n) or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise RenderError(f"balance_into: out must be C-contiguous float32 {(channels, n)}, got {out.dtype} {out.shape}")
    in_place = np.shares_memory(out, vocal)
    if in_place and (out.__array_interface__["data"][0] != vocal.__array_interface__["data"][0] or out.strides != vocal.strides):
        raise RenderError(
            "balance_into: out overlaps the vocal without being the vocal itself; pass out=vocal or a separate buffer"
        )
    if mix_meter is not None and (mix_meter.channels != channels or mix_meter.n_samples
                                  or mix_meter.stereo != (channels == 2)):
        raise RenderError(f"balance_into: mix_meter must be a new LoudnessMeter for {channels} channel(s)"
                          f"{' with stereo=True' if channels == 2 else ''}")
    check_finite(vocal, "balance_into: vocal")
    vocal_meter = _measure_vocal(vocal, sr)

    raw_meter = LoudnessMeter(sr, channels=channels) if backing_lufs is None else None
    placed_meter = LoudnessMeter(sr, channels=channels)
    ducker = _new_ducker(duck_db, vocal, vocal_meter) if duck_db > 0.0 else None
    if ducker is not None and in_place:
        ducker._controls = []  # keep the control-rate curve (n / 32 values) for pass 2
    for a in range(0, n, block_samples):  # pass 1: measure the backing as placed (and keep it, unless in place)
        b = min(a + block_samples, n)
        block = _read_block(backing, a, b)
        check_finite(block, "balance: backing")
        if raw_meter is not None:
            raw_meter.add(block)
        if ducker is not None:
            block = ducker(block, sr, reset=False)
        placed_meter.add(block)
        if not in_place:
            out[:, a:b] = block
    if raw_meter is not None:
        backing_raw_lufs = _check_backing_lufs(raw_meter.integrated_lufs())
    else:
        assert backing_lufs is not None  # raw_meter exists exactly when it was not given
        backing_raw_lufs = _check_backing_lufs(backing_lufs)
    placed_backing_lufs = placed_meter.integrated_lufs() if ducker is not None else backing_raw_lufs
    vocal_gain_db, report = _placement(vocal_meter, target_lu=vocal_to_backing_lu, duck_db=duck_db,
                                       backing_raw_lufs=backing_raw_lufs, backing_lufs=placed_backing_lufs, ducker=ducker)
    gain = np.float32(db_to_gain(vocal_gain_db))

    second = None
    if in_place and ducker is not None:
        # Pass 2 dips the backing again with the curve pass 1 detected (same blocks, same steps):
        # only the band filter runs again. The vocal is overwritten in pass 2, so the curve could
        # not be detected from it there anyway past the current block.
        second = _new_ducker(duck_db, vocal, vocal_meter)
        second._controls = np.concatenate(ducker._controls) if ducker._controls else np.zeros(0)
        ducker._controls = None
    # The mix meter is fed in CHUNK_SAMPLES chunks from the start, as the master would measure the mix.
    meter_as_formed = mix_meter is not None and block_samples % CHUNK_SAMPLES == 0
    for a in range(0, n, block_samples):  # pass 2: add the placed vocal
        b = min(a + block_samples, n)
        if in_place:
            block = _read_block(backing, a, b)
            if second is not None:
                block = second(block, sr, reset=False)  # reads the sidechain up to b before out[:, a:b] changes
            np.multiply(out[:, a:b], gain, out=out[:, a:b])
            out[:, a:b] += block
        else:
            out[:, a:b] += vocal[:, a:b] * gain
        if meter_as_formed:
            assert mix_meter is not None
            for c in range(a, b, CHUNK_SAMPLES):
                mix_meter.add(out[:, c : min(c + CHUNK_SAMPLES, b)])
    if mix_meter is not None and not meter_as_formed:
        for c in range(0, n, CHUNK_SAMPLES):
            mix_meter.add(out[:, c : c + CHUNK_SAMPLES])
    return out, report
