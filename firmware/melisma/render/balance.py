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

from .. import dsp
from ..analysis.loudness import CHUNK_SAMPLES, LoudnessMeter, gated_loudness, integrated_lufs, k_weighting_sos
from ..errors import RenderError
from .ducker import DUCK_CONTROL_SAMPLES, PRESENCE_HIGH_HZ, PRESENCE_LOW_HZ, Ducker
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


def ducking_moments(backing: Any, *, sr: int, n_samples: int | None = None, low_hz: float = PRESENCE_LOW_HZ,
                    high_hz: float = PRESENCE_HIGH_HZ, block_samples: int = CHUNK_SAMPLES) -> np.ndarray:
    """What any dip of the backing's presence band does to its loudness, measured from the backing once.

    The :class:`~melisma.render.ducker.Ducker` leaves ``x - c * bandpass(x)``, with the cut ``c``
    moving at its control rate (a 10 ms attack). K-weighting is linear, so within a control step
    of :data:`~melisma.render.ducker.DUCK_CONTROL_SAMPLES` samples the ducked backing's K-weighted
    energy is ``aa - 2 c ab + c**2 bb``, where ``a`` is the K-weighted backing and ``b`` its
    K-weighted presence band. These three sums per step are what this returns: with them
    :func:`balance_into` gets the ducked backing's loudness for any vocal from the cut curve alone,
    without reading or filtering the backing again (within 1e-5 LU of metering the ducked backing,
    measured on a 3-minute mix). The backing depends on no slider, so a saved plan keeps them.

    Parameters
    ----------
    backing : (channels, n) float32 array, or a reader with ``read(start, stop)`` and ``shape``.
    sr : sample rate, Hz.
    n_samples : samples to measure (default: the backing's length; a reader pads past its end).
    low_hz, high_hz : the ducker's band.
    block_samples : samples per block (a multiple of the control step).

    Returns
    -------
    (3 * channels, steps) float32
        Rows ``aa`` of each channel, then ``ab``, then ``bb``, per control step;
        ``steps = ceil(n_samples / 32)``.

    Examples
    --------
    >>> import numpy as np
    >>> backing = (0.1 * np.random.default_rng(0).standard_normal((2, 48000))).astype(np.float32)
    >>> ducking_moments(backing, sr=48000).shape
    (6, 1500)
    """
    shape = tuple(getattr(backing, "shape", ()))
    if len(shape) != 2:
        raise RenderError(f"ducking_moments: backing must be (channels, samples), got shape {shape}")
    channels = shape[0]
    n = int(shape[1] if n_samples is None else n_samples)
    step = DUCK_CONTROL_SAMPLES
    block_samples = max(step, block_samples // step * step)
    k_sos = k_weighting_sos(sr).astype(np.float32)  # float32 as the loudness meter filters
    band = dsp.design("butter", 1, [low_hz, high_hz], "bandpass", sr, "sos").astype(np.float32)
    k_zi = np.zeros((k_sos.shape[0], channels, 2), np.float32)
    band_zi = np.zeros((band.shape[0], channels, 2), np.float32)
    moments = np.zeros((3 * channels, -(-n // step)), np.float32)
    for a in range(0, n, block_samples):
        b = min(a + block_samples, n)
        block = _read_block(backing, a, b)
        check_finite(block, "balance: backing")
        weighted, k_zi = dsp.sosfilt(k_sos, block, k_zi)
        presence, band_zi = dsp.sosfilt(band, weighted, band_zi)  # the band of the K-weighted backing (both LTI)
        pad = -(b - a) % step
        if pad:
            weighted = np.pad(weighted, ((0, 0), (0, pad)))
            presence = np.pad(presence, ((0, 0), (0, pad)))
        w = weighted.reshape(channels, -1, step)
        p = presence.reshape(channels, -1, step)
        first = a // step
        last = first + w.shape[1]
        moments[:channels, first:last] = (w * w).sum(axis=2)
        moments[channels : 2 * channels, first:last] = (w * p).sum(axis=2)
        moments[2 * channels :, first:last] = (p * p).sum(axis=2)
    return moments


#: Mean of the ducker's linear ramp across a control step ((1 + 2 + ... + 32) / 32 / 32).
_RAMP_MEAN = (DUCK_CONTROL_SAMPLES + 1) / (2.0 * DUCK_CONTROL_SAMPLES)


def _ducked_backing_lufs(moments: Any, cuts: np.ndarray, *, n: int, hop_length: int, channels: int) -> float:
    """The ducked backing's integrated loudness from :func:`ducking_moments` (an array, or a reader of
    their file: read a thousand hops at a time) and the ducker's cut curve.
    """
    steps = int(moments.shape[1])
    cut = np.zeros(steps)
    cut[: min(steps, cuts.size)] = cuts[:steps]
    previous = np.concatenate([[0.0], cut[:-1]])
    mean_cut = previous + (cut - previous) * _RAMP_MEAN  # the step's cut, as the ramp applies it on average
    per_hop = hop_length // DUCK_CONTROL_SAMPLES
    hops = n // hop_length
    hop_energy = np.zeros(hops)
    total = 0.0
    block = 1000 * per_hop
    for a in range(0, steps, block):
        b = min(a + block, steps)
        m = _read_block(moments, a, b).astype(np.float64)
        c = mean_cut[a:b]
        energy = (m[:channels] - 2.0 * c * m[channels : 2 * channels] + c**2 * m[2 * channels :]).sum(axis=0)
        total += float(energy.sum())
        whole = max(0, min(b, hops * per_hop) - a) // per_hop  # the completed hops in this block
        hop_energy[a // per_hop : a // per_hop + whole] = energy[: whole * per_hop].reshape(whole, per_hop).sum(axis=1)
    return gated_loudness(hop_energy, hop_length=hop_length, fallback_energy=total, fallback_samples=n)


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
    duck_moments: Any = None,
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
    duck_moments : the backing's :func:`ducking_moments` (the same band, rate and length; an array
        or a reader of them with ``read(start, stop)`` and ``shape``), if kept:
        with ducking and a known ``backing_lufs`` the ducked backing's loudness comes from them and
        the ducker's cut curve, so the backing is read and filtered once instead of twice.

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

    ducker = _new_ducker(duck_db, vocal, vocal_meter) if duck_db > 0.0 else None
    hop_length = vocal_meter.hop_length
    from_moments = (
        duck_moments is not None and ducker is not None and backing_lufs is not None
        and hop_length % DUCK_CONTROL_SAMPLES == 0 and block_samples % DUCK_CONTROL_SAMPLES == 0
    )
    if from_moments:
        assert duck_moments is not None and ducker is not None and backing_lufs is not None  # checked just above
        steps = -(-n // DUCK_CONTROL_SAMPLES)
        if tuple(duck_moments.shape) != (3 * channels, steps):
            raise RenderError(f"balance_into: duck_moments {tuple(duck_moments.shape)} do not fit this backing; "
                              f"expected {(3 * channels, steps)} (recompute them with ducking_moments)")
        return _balance_from_moments(vocal, backing, out, vocal_meter, ducker, duck_moments, sr=sr, duck_db=duck_db,
                                     vocal_to_backing_lu=vocal_to_backing_lu, backing_lufs=float(backing_lufs),
                                     block_samples=block_samples, mix_meter=mix_meter)
    raw_meter = LoudnessMeter(sr, channels=channels) if backing_lufs is None else None
    placed_meter = LoudnessMeter(sr, channels=channels)
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
    _add_placed_vocal(vocal, backing, out, gain, second, sr=sr, read_backing=in_place, block_samples=block_samples,
                      mix_meter=mix_meter)
    return out, report


def _balance_from_moments(vocal: np.ndarray, backing: Any, out: np.ndarray, vocal_meter: LoudnessMeter, ducker: Ducker,
                          moments: Any, *, sr: int, duck_db: float, vocal_to_backing_lu: float,
                          backing_lufs: float, block_samples: int,
                          mix_meter: LoudnessMeter | None) -> tuple[np.ndarray, dict[str, Any]]:
    """:func:`balance_into` with the ducked backing's loudness from its moments: one pass over the backing."""
    channels, n = vocal.shape
    cuts = ducker.control_curve(n, sr, channels=channels)  # from the vocal alone, before the mix overwrites it
    placed_lufs = _ducked_backing_lufs(moments, cuts, n=n, hop_length=vocal_meter.hop_length, channels=channels)
    vocal_gain_db, report = _placement(vocal_meter, target_lu=vocal_to_backing_lu, duck_db=duck_db,
                                       backing_raw_lufs=_check_backing_lufs(backing_lufs), backing_lufs=placed_lufs,
                                       ducker=None)
    second = _new_ducker(duck_db, vocal, vocal_meter)
    second._controls = cuts
    _add_placed_vocal(vocal, backing, out, np.float32(db_to_gain(vocal_gain_db)), second, sr=sr, read_backing=True,
                      block_samples=block_samples, mix_meter=mix_meter)
    report.update(duck_db_max=round(ducker.max_dip_db, 3), duck_active_fraction=round(second.active_fraction, 4),
                  duck_backing_change_lu=placed_lufs - backing_lufs)
    return out, report


def _add_placed_vocal(vocal: np.ndarray, backing: Any, out: np.ndarray, gain: np.float32, ducker: Ducker | None, *,
                      sr: int, read_backing: bool, block_samples: int, mix_meter: LoudnessMeter | None) -> None:
    """The last pass: ``out = vocal * gain + backing as placed`` (``read_backing``: the backing is read
    and dipped here; otherwise ``out`` already holds it), the mix meter fed as the sum is formed.
    """
    n = vocal.shape[1]
    in_place = np.shares_memory(out, vocal)
    # The mix meter is fed in CHUNK_SAMPLES chunks from the start, as the master would measure the mix.
    meter_as_formed = mix_meter is not None and block_samples % CHUNK_SAMPLES == 0
    for a in range(0, n, block_samples):
        b = min(a + block_samples, n)
        if read_backing:
            block = _read_block(backing, a, b)
            if ducker is not None:
                block = ducker(block, sr, reset=False)  # reads the sidechain up to b before out[:, a:b] changes
            if in_place:
                np.multiply(out[:, a:b], gain, out=out[:, a:b])
                out[:, a:b] += block
            else:
                np.multiply(vocal[:, a:b], gain, out=out[:, a:b])
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
