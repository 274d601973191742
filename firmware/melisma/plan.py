"""The plan: what analysis found and what rendering will do, as one JSON-serialisable record.

``melisma analyze`` writes a plan file plus a cache folder beside it (the aligned, cleaned
vocal and the aligned backing as ``.npy``), so ``melisma render`` can re-render with new slider
values without decoding, aligning or cleaning again. The same record, with the render's
results added, is the mix report.

Layout of a plan file (``format`` = "melisma-plan", ``version`` = :data:`PLAN_VERSION`)::

    inputs      take / backing: path, sha256, codec, sr, channels, duration_s
    sr          engine sample rate of the cached audio (48000)
    alignment   offset_ms (positive = take was late), method, confidence, details
    cleanup     analysis (hum, clipping, noise, ...) and actions taken
    voice       analysis of the cleaned vocal (levels, sibilance band, spectral balance)
    backing     analysis of the backing (loudness, spectral balance, tempo)
    pitch       f0 track, notes, ornaments, key (added by pitch analysis)
    settings    style, sliders, target_lufs (what a plain render uses)
    cache       vocal / backing .npy files (relative to the plan), samples, sha256 of the inputs
    warnings    human-readable warnings
    timings_s   per-stage analysis times
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .audio_io import atomic_path, atomic_write_text
from .errors import PlanError

PLAN_FORMAT = "melisma-plan"
PLAN_VERSION = 1


def _jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays and dataclasses to plain JSON types (NaN/Inf become None)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if hasattr(obj, "to_dict"):
        return _jsonable(obj.to_dict())
    if isinstance(obj, Path):
        return str(obj)
    return obj


def to_json(record: dict[str, Any]) -> str:
    return json.dumps(_jsonable(record), indent=1, ensure_ascii=False, allow_nan=False) + "\n"


@dataclass
class Plan:
    """A plan in memory: the JSON record plus where its cache lives."""

    record: dict[str, Any]
    path: Path | None = None
    _arrays: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    # -- cache -------------------------------------------------------------------------------
    @property
    def cache_dir(self) -> Path:
        if self.path is None:
            raise PlanError("this plan has not been saved, so it has no cache folder")
        return self.path.with_name(self.path.name + ".cache")

    def array(self, name: str) -> np.ndarray:
        """The cached ``vocal`` (mono) or ``backing`` (2, n) array, memory-mapped read-only."""
        if name in self._arrays:
            return self._arrays[name]
        entry = self.record.get("cache", {}).get(name)
        if entry is None:
            raise PlanError(f"plan has no cached '{name}'; run `melisma analyze` again")
        file = self.cache_dir / entry["file"]
        if not file.exists():
            raise PlanError(f"{file}: the plan's cached {name} is missing; run `melisma analyze` again")
        try:
            arr = np.load(file, mmap_mode="r")
        except (ValueError, OSError) as exc:
            raise PlanError(f"{file}: the plan's cached {name} is damaged ({exc}); run `melisma analyze` again") from None
        if list(arr.shape) != list(entry["shape"]) or arr.dtype != np.float32:
            raise PlanError(
                f"{file}: cached {name} has shape {arr.shape} {arr.dtype}, the plan expects {entry['shape']} float32; "
                "run `melisma analyze` again"
            )
        self._arrays[name] = arr
        return arr

    def attach(self, name: str, arr: np.ndarray) -> None:
        """Hold an array in memory (for a plan not yet saved, e.g. inside ``melisma mix``)."""
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        self._arrays[name] = arr
        self.record.setdefault("cache", {})[name] = {"file": f"{name}.npy", "shape": list(arr.shape)}

    # -- I/O ---------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> None:
        """Write the plan JSON and its cache folder; the JSON goes last, so a plan file only
        exists when its cache is complete."""
        path = Path(path)
        self.path = path
        cache = self.cache_dir
        cache.mkdir(exist_ok=True)
        for name, arr in self._arrays.items():
            target = cache / f"{name}.npy"
            with atomic_path(target, overwrite=True) as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, arr, allow_pickle=False)
        atomic_write_text(path, to_json(self.record), overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Plan":
        path = Path(path)
        if not path.exists():
            raise PlanError(f"{path}: no such plan file; make one with `melisma analyze TAKE BACKING -o {path.name}`")
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PlanError(f"{path}: is not a Melisma plan (invalid JSON: {exc})") from None
        if not isinstance(record, dict) or record.get("format") != PLAN_FORMAT:
            raise PlanError(f"{path}: is not a Melisma plan (no \"format\": \"{PLAN_FORMAT}\")")
        version = record.get("version")
        if version != PLAN_VERSION:
            raise PlanError(
                f"{path}: plan version {version!r} is not supported by this Melisma (needs {PLAN_VERSION}); "
                "run `melisma analyze` again"
            )
        for key in ("inputs", "alignment", "cache", "settings", "sr"):
            if key not in record:
                raise PlanError(f"{path}: plan is missing '{key}'; run `melisma analyze` again")
        return cls(record=record, path=path)


def new_record() -> dict[str, Any]:
    return {"format": PLAN_FORMAT, "version": PLAN_VERSION}
