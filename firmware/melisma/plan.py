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
import shutil
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .audio_io import NpyBlockReader, atomic_path, atomic_write_text
from .errors import MelismaError, PlanError

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
    """The record as indented JSON (numpy values made plain, NaN/Inf as null), ending in a newline."""
    return json.dumps(_jsonable(record), indent=1, ensure_ascii=False, allow_nan=False) + "\n"


@dataclass
class Plan:
    """A plan in memory: the JSON record plus where its cache lives."""

    record: dict[str, Any]
    path: Path | None = None
    _files: dict[str, Path] = field(default_factory=dict, repr=False)  # adopted work files, before save()
    _work: Path | None = field(default=None, repr=False)
    _release: weakref.finalize | None = field(default=None, repr=False)  # removes the owned work folder (once)

    # -- cache -------------------------------------------------------------------------------
    @property
    def cache_dir(self) -> Path:
        if self.path is None:
            raise PlanError("this plan has not been saved, so it has no cache folder")
        return self.path.with_name(self.path.name + ".cache")

    def cache_file(self, name: str) -> Path:
        """Where the cached ``vocal`` or ``backing`` lives now (an adopted work file before
        :meth:`save`, else the cache folder); checked against the record's shape.
        """
        entry = self.record.get("cache", {}).get(name)
        if entry is None:
            raise PlanError(f"plan has no cached '{name}'; run `melisma analyze` again")
        file = self._files.get(name) or self.cache_dir / entry["file"]
        if not file.exists():
            raise PlanError(f"{file}: the plan's cached {name} is missing; run `melisma analyze` again")
        return file

    def reader(self, name: str) -> NpyBlockReader:
        """A block reader of the cached ``vocal`` or ``backing`` (plain reads, no memory map).

        Reads past the end give zeros, so a backing shorter than the take reads as padded.
        """
        file = self.cache_file(name)
        try:
            reader = NpyBlockReader(file)
        except (MelismaError, OSError) as exc:
            raise PlanError(f"{file}: the plan's cached {name} is damaged ({exc}); run `melisma analyze` again") from None
        entry = self.record["cache"][name]
        expected = list(entry.get("file_shape", entry["shape"]))
        if list(reader.shape) != expected:
            reader.close()
            raise PlanError(
                f"{file}: cached {name} has shape {reader.shape}, the plan expects {expected} float32; "
                "run `melisma analyze` again"
            )
        reader.shape = tuple(int(s) for s in entry["shape"])  # reads past the file's end give zeros
        return reader

    def array(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """The cached ``vocal`` (mono) or ``backing`` (2, n) array, or samples ``start:stop`` of it,
        read into memory (no memory map: a map would count the file in the process's memory
        while a copy of it is worked on).
        """
        with self.reader(name) as reader:
            try:
                return reader.read(start, reader.shape[-1] if stop is None else stop)
            except MelismaError as exc:
                raise PlanError(
                    f"{reader.path}: the plan's cached {name} is damaged ({exc}); run `melisma analyze` again"
                ) from None

    def adopt(
        self,
        name: str,
        file: str | os.PathLike,
        shape: tuple[int, ...] | list[int],
        file_shape: tuple[int, ...] | list[int] | None = None,
    ) -> None:
        """Take an already written float32 ``.npy`` (e.g. decoded straight to disk) as the cached
        ``name``; :meth:`save` moves it into the cache folder. ``shape`` is what readers of the
        plan see; ``file_shape`` (if shorter) what the file holds: the rest reads as zeros.
        """
        self._files[name] = Path(file)
        entry: dict[str, Any] = {"file": f"{name}.npy", "shape": [int(s) for s in shape]}
        if file_shape is not None and list(file_shape) != list(shape):
            entry["file_shape"] = [int(s) for s in file_shape]
        self.record.setdefault("cache", {})[name] = entry

    def scratch_dir(self) -> Path | None:
        """Where render-time caches (e.g. corrected vocals) may go: the cache folder of a saved
        plan, the work folder of an unsaved one, or None when there is neither.
        """
        if self.path is not None:
            return self.cache_dir
        return self._work

    def own_work_dir(self, folder: str | os.PathLike) -> None:
        """Make ``folder`` (holding adopted work files) this plan's: it is removed with the plan,
        or at :meth:`release_work_dir`.
        """
        self._work = Path(folder)
        self._release = weakref.finalize(self, shutil.rmtree, str(self._work), True)

    def release_work_dir(self) -> None:
        """Remove the owned work folder now (an unsaved plan that is done with, even when an error
        still holds it in a traceback); nothing to do when there is none or it is gone already.
        """
        if self._release is not None:
            self._release()

    # -- I/O ---------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> None:
        """Write the plan JSON and its cache folder; the JSON goes last, so a plan file only
        exists when its cache is complete.
        """
        path = Path(path)
        self.path = path
        cache = self.cache_dir
        cache.mkdir(exist_ok=True)
        for name, file in list(self._files.items()):
            target = cache / f"{name}.npy"
            if file.resolve() == target.resolve():
                continue
            with atomic_path(target, overwrite=True) as tmp:
                shutil.move(str(file), str(tmp))  # a rename when on the same file system
            self._files[name] = target
        atomic_write_text(path, to_json(self.record), overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Plan:
        path = Path(path)
        if not path.exists():
            raise PlanError(f"{path}: no such plan file; make one with `melisma analyze TAKE BACKING -o {path.name}`")
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PlanError(f"{path}: is not a Melisma plan (invalid JSON: {exc})") from None
        if not isinstance(record, dict) or record.get("format") != PLAN_FORMAT:
            raise PlanError(f'{path}: is not a Melisma plan (no "format": "{PLAN_FORMAT}")')
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
    """An empty plan record stamped with the plan format and version."""
    return {"format": PLAN_FORMAT, "version": PLAN_VERSION}
