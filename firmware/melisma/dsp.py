"""Filtering without the cost of importing :mod:`scipy.signal`: the same kernels, designs kept.

Importing :mod:`scipy.signal` costs about a second of CPU (it pulls in ``scipy.stats``,
``scipy.interpolate`` and ``scipy.special``), which is a third of a whole-process re-render of a
3-minute take. A render needs only two of its compiled kernels (second-order sections and the
direct-form filter) and a handful of filter designs that never change for a plan. This module

- runs :func:`sosfilt` and :func:`lfilter` on scipy's own compiled kernels (``_sosfilt``,
  ``_sigtools``), loaded by themselves under their real module names, so the results are those
  of :func:`scipy.signal.sosfilt` / :func:`scipy.signal.lfilter` bit for bit, and a later
  ``import scipy.signal`` reuses the very same modules;
- designs filters with :mod:`melisma.filter_design` (scipy.signal's own arithmetic, checked bit
  for bit, without importing scipy.signal: the one-click mix never loads it, which keeps ~50 MB
  of scipy.stats / interpolate / optimize out of the box's memory) and gives Welch's spectrum
  (:func:`welch_psd`);
- keeps filter designs (:func:`design`) in a memo that can be saved beside a plan
  (:func:`save_designs` / :func:`load_designs`), so a re-render in a fresh process finds every
  coefficient it needs without designing (and importing) anything;
- gives an exact sliding minimum (:func:`sliding_min`; a minimum has no rounding) in place of
  :func:`scipy.ndimage.minimum_filter1d`, whose import costs another third of a second.

When the kernels cannot be loaded this way (another scipy layout), everything falls back to
:mod:`scipy.signal` itself: same results, only the import cost comes back.

Examples
--------
>>> import numpy as np
>>> sos = design("butter", 2, 1000.0, "lowpass", 48000, "sos")
>>> y, zf = sosfilt(sos, np.ones(4), np.zeros((1, 2)))
>>> y.shape, zf.shape
((4,), (1, 2))
>>> sliding_min(np.array([3.0, 1.0, 2.0, 5.0, 4.0]), 2)
array([1., 1., 2., 4.])
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np

_KERNELS: dict[str, Any] = {}
_LOCK = threading.Lock()


def _kernel(name: str) -> Any:
    """scipy.signal's compiled module ``name`` (``_sosfilt`` or ``_sigtools``), or None."""
    if name in _KERNELS:
        return _KERNELS[name]
    with _LOCK:
        if name in _KERNELS:
            return _KERNELS[name]
        full = f"scipy.signal.{name}"
        module = sys.modules.get(full)
        if module is None and "scipy.signal" not in sys.modules:
            module = _load_alone(full)
        if module is None:
            import scipy.signal  # noqa: F401  # the slow way, same modules

            module = sys.modules.get(full)
        _KERNELS[name] = module
        return module


def _load_alone(full: str) -> Any:
    """Load one compiled scipy.signal module without running the package's ``__init__``."""
    try:
        import scipy

        folder = Path(scipy.__file__).parent / "signal"
        leaf = full.rsplit(".", 1)[1]
        path = next((folder / (leaf + s) for s in importlib.machinery.EXTENSION_SUFFIXES if (folder / (leaf + s)).exists()),
                    None)
        if path is None:
            return None
        loader = importlib.machinery.ExtensionFileLoader(full, str(path))
        spec = importlib.util.spec_from_file_location(full, path, loader=loader)
        if spec is None:
            return None
        module = importlib.util.module_from_spec(spec)
        loader.exec_module(module)
        sys.modules[full] = module  # `import scipy.signal` later finds and reuses it
        return module
    except Exception:  # any other layout: the caller imports scipy.signal instead
        return None


def sosfilt(sos: np.ndarray, x: np.ndarray, zi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`scipy.signal.sosfilt` along the last axis with initial state ``zi``: ``(y, zf)``.

    ``x`` is ``(n,)`` or ``(channels, n)``; ``zi`` is ``(sections, channels, 2)`` (or
    ``(sections, 2)`` for 1-D ``x``), as scipy takes it with ``axis=-1``. The arithmetic is
    scipy's kernel itself, in the result type of ``sos``, ``x`` and ``zi``.
    """
    module = _kernel("_sosfilt")
    if module is None:  # pragma: no cover - depends on the scipy build
        from scipy import signal

        return signal.sosfilt(sos, x, axis=-1, zi=zi)
    x = np.asarray(x)
    zi = np.asarray(zi)
    sos = np.asarray(sos)
    dtype = np.result_type(sos, x, zi)
    if dtype.char not in "fdgFDGO":
        raise NotImplementedError(f"input type '{dtype}' not supported")
    n_sections = sos.shape[0]
    if x.ndim == 1:
        y = np.array(x[np.newaxis, :], dtype, order="C")
        state = np.array(zi.reshape(1, n_sections, 2), dtype, order="C")
        module._sosfilt(sos.astype(dtype, copy=False), y, state)
        return y[0], state.reshape(n_sections, 2)
    y = np.array(x, dtype, order="C")  # a copy, filtered in place
    state = np.ascontiguousarray(np.moveaxis(zi, 0, 1), dtype=dtype).copy()  # (channels, sections, 2)
    module._sosfilt(sos.astype(dtype, copy=False), y, state)
    return y, np.moveaxis(state, 1, 0)


def sosfilt_inplace(sos: np.ndarray, y: np.ndarray, state: np.ndarray) -> None:
    """:func:`sosfilt` in place, for a real-time caller: ``y`` is C-contiguous ``(channels, n)``
    float64 or float32 (as ``sos``), ``state`` C-contiguous ``(channels, sections, 2)``; both are
    overwritten (the filtered block and the final state). No allocation when scipy's kernel loads.
    """
    module = _kernel("_sosfilt")
    if module is not None:
        module._sosfilt(sos, y, state)
        return
    out, zf = sosfilt(sos, y, np.moveaxis(state, 0, 1))  # pragma: no cover - another scipy layout
    y[...] = out  # pragma: no cover
    state[...] = np.moveaxis(zf, 1, 0)  # pragma: no cover


def lfilter(b: Any, a: Any, x: np.ndarray, zi: Any, *, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """:func:`scipy.signal.lfilter` along ``axis`` with ``len(a) > 1`` and initial state ``zi`` (the
    shape scipy takes: ``x``'s with ``axis`` of length ``max(len(a), len(b)) - 1``): ``(y, zf)``.
    """
    module = _kernel("_sigtools")
    b, a = np.atleast_1d(b), np.atleast_1d(a)
    if module is None or len(a) < 2:  # pragma: no cover - depends on the scipy build
        from scipy import signal

        return signal.lfilter(b, a, x, axis=axis, zi=zi)
    return module._linear_filter(b, a, np.asarray(x), axis, np.asarray(zi))


def sliding_min(x: np.ndarray, width: int) -> np.ndarray:
    """``out[i] = min(x[i:i + width])`` for the ``len(x) - width + 1`` windows inside ``x``.

    The van Herk / Gil-Werman scheme: running minima forward and backward within blocks of
    ``width``, two vectorised passes whatever the width. A minimum is exact, so this equals any
    other way of taking it (e.g. the inner part of :func:`scipy.ndimage.minimum_filter1d`).
    """
    x = np.asarray(x)
    width = int(width)
    n = x.shape[0] - width + 1
    if width < 1 or n < 1:
        raise ValueError(f"sliding_min: need 1 <= width <= len(x), got width={width}, len(x)={x.shape[0]}")
    if width == 1:
        return x.copy()
    blocks = -(-x.shape[0] // width)
    padded = np.full(blocks * width, np.inf, dtype=np.result_type(x, np.float32))
    padded[: x.shape[0]] = x
    grid = padded.reshape(blocks, width)
    forward = np.minimum.accumulate(grid, axis=1).ravel()
    backward = np.minimum.accumulate(grid[:, ::-1], axis=1)[:, ::-1].ravel()
    # Window i..i+width-1 spans the end of one block (backward[i]) and the start of the next
    # (forward[i + width - 1]).
    return np.minimum(backward[:n], forward[width - 1 : width - 1 + n]).astype(x.dtype, copy=False)


# -- designs ---------------------------------------------------------------------------------

_DESIGNS: dict[str, list] = {}
_NEW_DESIGNS = False


def _design_key(kind: str, args: tuple) -> str:
    return json.dumps([kind, *args], separators=(",", ":"))


def design(kind: str, *args: Any) -> np.ndarray:
    """A filter design, computed once (by :mod:`melisma.filter_design`, scipy.signal's arithmetic bit
    for bit) and remembered (float64).

    ``kind`` is ``"butter"`` with ``(order, freq_hz or [lo, hi], btype, sr, output)``
    (``output`` ``"sos"``, or ``"ba"``, which returns ``np.array([b, a])``), or ``"firwin"``
    with ``(numtaps, cutoff, window)`` (``window`` as a list, e.g. ``["kaiser", 6.0]``).
    Arguments must be JSON values: they name the design in the memo and in a saved design file.
    """
    global _NEW_DESIGNS
    args = tuple(list(a) if isinstance(a, tuple) else a for a in args)
    key = _design_key(kind, args)
    found = _DESIGNS.get(key)
    if found is None:
        from . import filter_design  # scipy.signal's arithmetic without importing scipy.signal

        if kind == "butter":
            order, freq, btype, sr, output = args
            if output == "ba":
                b, a = filter_design.butter(order, freq, btype, fs=sr, output="ba")
                value = np.array([b, a])
            else:
                value = filter_design.butter(order, freq, btype, fs=sr, output="sos")
        elif kind == "firwin":
            numtaps, cutoff, window = args
            if not (isinstance(window, list) and len(window) == 2 and window[0] == "kaiser"):
                raise ValueError(f"design: firwin takes window ['kaiser', beta] here, got {window!r}")
            value = filter_design.firwin_lowpass(numtaps, cutoff, kaiser_beta=float(window[1]))
        else:
            raise ValueError(f"design: unknown kind {kind!r}; use 'butter' or 'firwin'")
        found = np.asarray(value, dtype=np.float64).tolist()
        _DESIGNS[key] = found
        _NEW_DESIGNS = True
    return np.array(found, dtype=np.float64)


def load_designs(path: str | os.PathLike) -> int:
    """Add the designs saved in ``path`` to the memo (a missing or damaged file adds none); returns how many."""
    try:
        saved = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 0
    if not isinstance(saved, dict) or saved.get("format") != "melisma-filter-designs":
        return 0
    designs = saved.get("designs")
    if not isinstance(designs, dict):
        return 0
    added = 0
    for key, value in designs.items():
        if isinstance(key, str) and isinstance(value, list) and key not in _DESIGNS:
            _DESIGNS[key] = value
            added += 1
    return added


def save_designs(path: str | os.PathLike) -> bool:
    """Write the memo to ``path`` (atomically) when designs were added since the last save; True if written.

    JSON keeps every float exactly (shortest round-trip form), so a loaded design is the designed one bit for bit.
    """
    global _NEW_DESIGNS
    if not _NEW_DESIGNS and Path(path).exists():
        return False
    from .audio_io import atomic_write_text
    from .errors import MelismaError

    with contextlib.suppress(OSError, MelismaError):
        atomic_write_text(Path(path), json.dumps({"format": "melisma-filter-designs", "designs": _DESIGNS}), overwrite=True)
        _NEW_DESIGNS = False
        return True
    return False


def welch_psd(x: np.ndarray, sr: float, *, nperseg: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Welch's power spectral density of a 1-D ``x`` (periodic Hann, 50 % overlap, each segment's
    mean removed, one-sided, density scaling): ``(freqs_hz, psd)``, as :func:`scipy.signal.welch`
    with its defaults gives it (to rounding).

    Examples
    --------
    >>> import numpy as np
    >>> f, p = welch_psd(np.random.default_rng(0).standard_normal(48000), 48000)
    >>> f.shape, bool(abs(np.mean(p) * 24000 - 1.0) < 0.05)  # white noise of unit variance
    ((513,), True)
    """
    import scipy.fft

    from .filter_design import hann

    x = np.asarray(x, dtype=np.float64).reshape(-1)
    nperseg = int(min(nperseg, x.size))
    if nperseg < 1:
        raise ValueError("welch_psd: the signal is empty")
    step = nperseg - nperseg // 2
    window = hann(nperseg)
    frames = np.lib.stride_tricks.sliding_window_view(x, nperseg)[::step]
    frames = frames - frames.mean(axis=-1, keepdims=True)
    spectrum = np.abs(scipy.fft.rfft(frames * window, axis=-1)) ** 2 / (sr * float(np.sum(window * window)))
    if nperseg % 2:
        spectrum[..., 1:] *= 2
    else:
        spectrum[..., 1:-1] *= 2
    return np.fft.rfftfreq(nperseg, 1.0 / sr), spectrum.mean(axis=0)
