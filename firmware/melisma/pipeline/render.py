"""Render many: a plan and its cached audio, through correction, the vocal chain, balance and master.

:func:`render` prepares what both of its paths share (options resolved once, the pitch-corrected
vocal, the vocal chain's wet output) and then finishes either in memory (the mix and the stems as
arrays, for stems and pictures) or straight into a file (the wet vocal becomes the mix in place and
is mastered block by block into the encoder, the lean path a full mix takes).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__, dsp
from ..audio_io import AudioWriter, NpyBlockReader, NpyWriter, atomic_path, read_npy
from ..errors import MelismaError, PlanError, RenderError
from ..plan import Plan
from ..progress import ProgressCallback, StageClock
from .clock import release_memory, timed_stage
from .options import (
    CEILING_DBTP,
    ENGINE_SR,
    LOSSY_EXTENSIONS,
    PREVIEW_CORRECTION_MARGIN_S,
    RENDER_WEIGHTS,
    RenderOptions,
    ResolvedRender,
    preview_window,
)
from .outputs import check_encoded_file, loudness_section


@dataclass
class PreparedRender:
    """What both ways of finishing a render share: the options, the window, the chain's output."""

    resolved: ResolvedRender
    clock: StageClock
    window: dict[str, Any]
    wet: np.ndarray  # (2, n) the processed vocal over the window, pre-roll cut
    explanation: list[dict[str, Any]]
    pitch_report: dict[str, Any] | None
    has_backing: bool
    spilled: Any = None  # a SpilledArray holding ``wet`` (a long take's full render into a file), closed by the finisher

    @property
    def full(self) -> bool:
        """A render of the whole take (not a preview window)."""
        return not self.window["preview"]


def render(
    plan: Plan,
    *,
    style: str | None = None,
    sliders: dict[str, float] | None = None,
    target_lufs: float | None = None,
    correction: float | None = None,
    ornaments: str | dict | None = None,
    start_s: float | None = None,
    duration_s: float | None = None,
    ceiling_dbtp: float = CEILING_DBTP,
    progress: ProgressCallback | None = None,
    mix_path: Path | None = None,
    writer_options: dict[str, Any] | None = None,
    check_file: bool = True,
) -> tuple[np.ndarray | None, dict[str, np.ndarray] | None, dict[str, Any]]:
    """Render the mix from a plan.

    Returns ``(mix, stems, report)``: the mastered stereo mix at :data:`ENGINE_SR`, the vocal and
    backing as placed before the master bus, and the report (the plan's record plus what this
    render did). ``start_s``/``duration_s`` render a preview window only. A plan made without a
    backing renders the processed vocal alone.

    With ``mix_path`` the lean path is taken: the wet vocal becomes the mix in place
    (balance_into) and is mastered block by block straight into the file at ``mix_path``
    (master_stream); no stems are kept and ``(None, None, report)`` is returned. ``writer_options``
    go to its :class:`~melisma.audio_io.AudioWriter` (``bit_rate``, ``codec_options``); with
    ``check_file=False`` a lossy file is not measured again after encoding (a preview's level is
    the window's own anyway).
    """
    options = RenderOptions(style=style, sliders=sliders, target_lufs=target_lufs, correction=correction,
                            ornaments=ornaments, start_s=start_s, duration_s=duration_s)
    designs = _designs_file(plan)
    if designs is not None:
        dsp.load_designs(designs)
    # Only the lean path can keep a long take's wet vocal in a file: the in-memory one returns arrays.
    prepared = prepare_render(plan, options, progress=progress, spill=mix_path is not None)
    result: tuple[np.ndarray | None, dict[str, np.ndarray] | None, dict[str, Any]]
    try:
        if mix_path is None:
            result = finish_in_memory(plan, prepared, ceiling_dbtp=ceiling_dbtp)
        else:
            result = None, None, finish_into_file(plan, prepared, Path(mix_path), ceiling_dbtp=ceiling_dbtp,
                                                  writer_options=writer_options, check_file=check_file)
    finally:
        if prepared.spilled is not None:
            prepared.wet = None  # type: ignore[assignment]
            prepared.spilled.close()
    if designs is not None:
        dsp.save_designs(designs)
    return result


#: The filter designs a plan's renders use, kept in its cache folder (see :mod:`melisma.dsp`).
DESIGNS_FILE = "filters.json"


def _designs_file(plan: Plan) -> Path | None:
    """Where a saved plan keeps its filter designs (None for an unsaved plan)."""
    return plan.cache_dir / DESIGNS_FILE if plan.path is not None else None


def prime_render(plan: Plan) -> None:
    """Render one second of a saved plan in memory, so every filter its renders need is designed
    and kept beside it: a later re-render in a fresh process then never imports :mod:`scipy.signal`
    (about a second of CPU). Costs a few tens of milliseconds; a plan too short for it is left alone.
    """
    n = int(plan.record.get("cache", {}).get("vocal", {}).get("shape", [0])[0])
    if plan.path is None or n < 4 * ENGINE_SR:
        return
    with contextlib.suppress(MelismaError):  # e.g. a silent second: the first real render designs instead
        render(plan, start_s=round(n / ENGINE_SR / 2, 3), duration_s=1.0)


def prepare_render(plan: Plan, options: RenderOptions, *, progress: ProgressCallback | None = None,
                   spill: bool = False) -> PreparedRender:
    """Resolve the options, correct the pitch and run the vocal chain over the render's window.

    The chain runs in three parts (:func:`~melisma.render.chain.split_vocal_chain`,
    :func:`~melisma.render.chain.split_tone`): the *dry* part (de-esser, corrective EQ,
    compressor), which no slider but the style and tuning changes; the *tonal EQ* (warmth, air);
    and the *space* (reverb, echo). A full render keeps the dry and the toned vocal beside the
    plan (``dry-<key>.npy`` and ``toned-<key>.npy``, like the corrected vocal), so the next render
    with other warmth or air values runs the tonal EQ and the space only, and one with other
    reverb or vocal-level values the space only; a preview reads its window from those files when
    they are there (the window then is exactly the full render's vocal). With ``spill``, a full
    render of a long take writes the wet vocal into a file-backed buffer
    (:func:`~melisma.pipeline.spill.wet_buffer`) instead of memory.
    """
    from ..render.chain import build_vocal_chain, render_vocal_chain, split_tone, split_vocal_chain
    from ..render.stages import Chain

    resolved = options.resolve(plan.record.get("settings", {}))
    clock = StageClock(RENDER_WEIGHTS, progress)
    cache = plan.record.get("cache", {})
    if "vocal" not in cache:
        raise PlanError("plan has no cached 'vocal'; run `melisma analyze` again")
    n_total = int(cache["vocal"]["shape"][0])
    window = preview_window(n_total, options.start_s, options.duration_s)
    lo, hi, cut = window["lo"], window["hi"], window["cut"]
    full = not window["preview"]
    chain, explanation = build_vocal_chain(
        resolved.settings, plan.record.get("voice", {}), plan.record.get("backing"), sr=ENGINE_SR
    )
    dry_chain, wet_chain = split_vocal_chain(chain)
    tone_chain, space_chain = split_tone(wet_chain)
    folder = plan.scratch_dir()
    dry_file, toned_file = _kept_vocal_files(plan, resolved, dry_chain, tone_chain)
    pitch_report = None
    out: np.ndarray | None = None
    spilled = None
    if full and spill:
        from .spill import wet_buffer

        out, spilled = wet_buffer(2, n_total, folder=folder)
        if spilled is None:
            out = None  # short take: the chain makes its own array, as always
    # the latest kept vocal there is, and what is left to run over it
    kept: tuple[Path, Chain, list[tuple[Any, Path | None]]] | None = None
    if toned_file is not None and _usable_cache_file(toned_file, (n_total,)):
        kept = toned_file, space_chain, []
    elif dry_file is not None and _usable_cache_file(dry_file, (n_total,)):
        kept = dry_file, wet_chain, [(tone_chain, toned_file)] if tone_chain.stages else []
    if kept is not None:
        kept_file, rest, keep_too = kept
        if "pitch" in plan.record:
            with timed_stage(clock, "correct_pitch", release=full):
                _, pitch_report = _correction_plan(plan.record["pitch"], resolved.tuning)
                pitch_report["cached"] = True
        with timed_stage(clock, "vocal_chain", release=full):
            if full:
                with NpyBlockReader(kept_file) as source:
                    wet = _render_keeping(keep_too, space_chain, source, out=out)
            else:
                wet = render_vocal_chain(rest, read_npy(kept_file, start=lo, stop=hi), sr=ENGINE_SR)
    else:
        # A full render streams the vocal from a file into the chain (the plan's cached vocal, or
        # the cached corrected one), so only the chain's stereo output is ever whole in memory.
        vocal: np.ndarray | None = None
        vocal_file: Path | None = None
        if "pitch" in plan.record:
            with timed_stage(clock, "correct_pitch", release=full):
                vocal, pitch_report, vocal_file = _corrected(plan, lo=lo, hi=hi, full=full, settings=resolved.tuning,
                                                             keep=cut)
                if full:
                    release_memory()
        elif full:
            with contextlib.suppress(PlanError):
                vocal_file = plan.cache_file("vocal")
        if vocal is None and vocal_file is None:
            vocal = plan.array("vocal", lo, hi)
        parts = [(dry_chain, dry_file), (tone_chain, toned_file)]
        with timed_stage(clock, "vocal_chain", release=full):
            if vocal is None:
                assert vocal_file is not None
                with NpyBlockReader(vocal_file) as source:
                    if source.shape != (n_total,):
                        raise PlanError(
                            f"{vocal_file}: holds {source.shape} samples, the plan expects ({n_total},); "
                            "run `melisma analyze` again"
                        )
                    wet = _render_keeping(parts, space_chain, source, out=out)
            elif full and dry_file is not None:
                wet = _render_keeping(parts, space_chain, vocal, out=out)
            else:
                wet = render_vocal_chain(chain, vocal, sr=ENGINE_SR, out=out)
            del vocal
    if folder is not None:
        from .cache import enforce_plan_cache_limit

        enforce_plan_cache_limit(folder)
    if wet.ndim == 1:
        wet = np.stack([wet, wet])
    if cut:
        wet = np.ascontiguousarray(wet[:, cut:])
    if spilled is not None and not np.shares_memory(wet, spilled.array):  # the chain made its own array after all
        spilled.close()
        spilled = None
    return PreparedRender(resolved=resolved, clock=clock, window=window, wet=wet, explanation=explanation,
                          pitch_report=pitch_report, has_backing="backing" in cache, spilled=spilled)


def warm_render_caches(plan: Plan, *, style: str | None = None, sliders: dict[str, float] | None = None) -> Path | None:
    """Correct the whole take and run the dry part of the vocal chain and its tonal EQ for these
    settings, keeping all three beside the plan: what the next full render reuses and what a
    preview reads its window from. The box does this right after analysing, so the first preview
    is already a cheap one. Returns the dry vocal's file (None for a plan with no place to keep it).
    """
    from ..render.chain import build_vocal_chain, split_tone, split_vocal_chain

    resolved = RenderOptions(style=style, sliders=sliders).resolve(plan.record.get("settings", {}))
    folder = plan.scratch_dir()
    if folder is None:
        return None
    chain, _ = build_vocal_chain(resolved.settings, plan.record.get("voice", {}), plan.record.get("backing"), sr=ENGINE_SR)
    dry_chain, wet_chain = split_vocal_chain(chain)
    tone_chain, _ = split_tone(wet_chain)
    dry_file, toned_file = _kept_vocal_files(plan, resolved, dry_chain, tone_chain)
    assert dry_file is not None  # the plan has a folder
    n_total = int(plan.record["cache"]["vocal"]["shape"][0])
    have_dry = _usable_cache_file(dry_file, (n_total,))
    if have_dry and (toned_file is None or _usable_cache_file(toned_file, (n_total,))):
        return dry_file
    if have_dry:
        with NpyBlockReader(dry_file) as source:
            _render_keeping([(tone_chain, toned_file)], None, source)
    else:
        vocal = vocal_file = None
        if "pitch" in plan.record:
            vocal, _, vocal_file = _corrected(plan, lo=0, hi=n_total, full=True, settings=resolved.tuning)
            release_memory()
        else:
            vocal_file = plan.cache_file("vocal")
        parts = [(dry_chain, dry_file), (tone_chain, toned_file)]
        if vocal_file is not None:
            with NpyBlockReader(vocal_file) as source:
                _render_keeping(parts, None, source)
        else:
            _render_keeping(parts, None, vocal)
    from .cache import enforce_plan_cache_limit

    enforce_plan_cache_limit(folder)
    return dry_file if dry_file.exists() else None


def _kept_vocal_files(plan: Plan, resolved: ResolvedRender, dry_chain, tone_chain) -> tuple[Path | None, Path | None]:
    """Where the dry and the toned vocal of these settings are kept (None: an unsaved plan, or no tonal EQ)."""
    folder = plan.scratch_dir()
    if folder is None:
        return None, None
    dry_key = _dry_key(plan, resolved, dry_chain)
    if not tone_chain.stages:
        return folder / f"dry-{dry_key}.npy", None
    tone = hashlib.sha1(json.dumps([dry_key, tone_chain.describe()], sort_keys=True, default=str).encode())
    return folder / f"dry-{dry_key}.npy", folder / f"toned-{tone.hexdigest()[:12]}.npy"


def _dry_key(plan: Plan, resolved: ResolvedRender, dry_chain) -> str:
    """A short hash naming one dry vocal: the take, its correction, and the dry part of the chain."""
    from ..render.pitch import correction_key

    pitch = plan.record.get("pitch")
    payload = {
        "take": (plan.record.get("inputs") or {}).get("take", {}).get("sha256"),
        "vocal": plan.record.get("cache", {}).get("vocal", {}).get("shape"),
        "correction": correction_key(pitch, resolved.tuning) if pitch is not None else None,
        "chain": dry_chain.describe(),
    }
    return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _usable_cache_file(path: Path, shape: tuple[int, ...]) -> bool:
    """A render cache file that exists and holds ``shape`` float32 (it is marked as just used)."""
    if not path.exists():
        return False
    try:
        with NpyBlockReader(path) as reader:
            usable = tuple(reader.shape) == tuple(shape)
    except (MelismaError, OSError):
        return False  # a damaged cache entry is simply recomputed
    if usable:
        from .cache import touch

        touch(path)
    return usable


def _render_keeping(parts: list[tuple[Any, Path | None]], rest, source, *, block_s: float = 5.0,
                    out: np.ndarray | None = None) -> Any:
    """The chain parts one after another, then ``rest``, over ``source`` (an array or a block
    reader), block for block what :func:`~melisma.render.chain.render_vocal_chain` does with the
    whole chain; each part's output is also written to its file (atomically; a part with no file
    is not kept). When a file cannot be written, none is kept and the chain runs plainly. With
    ``rest`` None only the files are written (returns None).
    """
    from ..render.chain import render_vocal_chain
    from ..render.stages import Chain

    whole = Chain([stage for chain, _ in parts for stage in chain.stages] + (list(rest.stages) if rest is not None else []))
    if all(file is None for _, file in parts):
        return render_vocal_chain(whole, source, sr=ENGINE_SR, block_s=block_s, out=out) if rest is not None else None
    n = int(source.shape[0])
    read = source.read if hasattr(source, "read") else (lambda a, b: source[a:b])
    block = max(1, int(round(block_s * ENGINE_SR)))
    start = 0
    try:
        with contextlib.ExitStack() as files:
            writers = [files.enter_context(NpyWriter(files.enter_context(atomic_path(file, overwrite=True)), channels=1))
                       if file is not None else None for _, file in parts]
            for start in range(0, max(n, 1), block):
                first = start == 0
                piece = read(start, min(n, start + block))
                for (chain, _), writer in zip(parts, writers, strict=True):
                    piece = chain(piece, ENGINE_SR, reset=first)
                    if writer is not None:
                        writer.append(piece)
                if rest is None:
                    continue
                piece = rest(piece, ENGINE_SR, reset=first)
                piece = piece if piece.ndim == 2 else np.stack([piece, piece])
                if first and (out is None or out.shape != (piece.shape[0], n)):
                    out = np.empty((piece.shape[0], n), dtype=np.float32)
                assert out is not None  # made at the first block
                out[:, start:start + piece.shape[-1]] = piece
    except (OSError, MelismaError):
        if rest is None:
            return None
        if out is None or start + block < n:  # a file failed before the chain finished: run it plainly
            return render_vocal_chain(whole, source, sr=ENGINE_SR, block_s=block_s, out=out)
    if rest is None:
        return None
    return out if out is not None else np.zeros((2, 0), np.float32)


def finish_in_memory(plan: Plan, prepared: PreparedRender, *, ceiling_dbtp: float) -> tuple[
        np.ndarray, dict[str, np.ndarray], dict[str, Any]]:
    """Balance against the backing and master, all as arrays: ``(mix, stems, report)``."""
    from ..render.balance import balance
    from ..render.master import master

    p, settings, window = prepared, prepared.resolved.settings, prepared.window
    lo, hi, cut = window["lo"], window["hi"], window["cut"]
    wet = p.wet
    p.wet = None  # type: ignore[assignment]  # the finisher owns it now (memory)
    with timed_stage(p.clock, "balance", release=p.full):
        backing = plan.array("backing", lo + cut, hi) if p.has_backing else None
        if backing is not None:
            vocal_placed, backing_placed, balance_report = balance(
                wet, backing, sr=ENGINE_SR, vocal_to_backing_lu=settings.vocal_to_backing_lu, duck_db=settings.duck_db
            )
        else:
            vocal_placed, backing_placed, balance_report = wet, np.zeros_like(wet), None
        del wet, backing
    with timed_stage(p.clock, "master", release=p.full):
        mix = vocal_placed + backing_placed
        mix, master_report = master(mix, sr=ENGINE_SR, target_lufs=p.resolved.target_lufs, ceiling_dbtp=ceiling_dbtp)
        if not np.all(np.isfinite(mix)):
            raise RenderError(
                "the rendered mix contains NaN/Inf samples; this is a bug — please report it with the plan file"
            )
    report = _report(plan, p, balance_report, master_report, ceiling_dbtp=ceiling_dbtp, file_check=None)
    return mix, {"vocal": vocal_placed, "backing": backing_placed}, report


def finish_into_file(plan: Plan, prepared: PreparedRender, mix_path: Path, *, ceiling_dbtp: float,
                     writer_options: dict[str, Any] | None = None, check_file: bool = True) -> dict[str, Any]:
    """Balance in place and master block by block into ``mix_path``; returns the report.

    ``writer_options`` are passed to the :class:`~melisma.audio_io.AudioWriter`; ``check_file=False``
    skips measuring a lossy file after encoding (see :func:`render`).
    """
    from ..analysis.loudness import LoudnessMeter, TruePeakMeter
    from ..render.balance import balance_into
    from ..render.master import master_stream

    p, settings, window = prepared, prepared.resolved.settings, prepared.window
    lo, hi, cut = window["lo"], window["hi"], window["cut"]
    wet = p.wet
    p.wet = None  # type: ignore[assignment]  # the finisher owns it now (memory)
    mix_meter: LoudnessMeter | None = None  # the mix as balance formed it, measured on the way (the master's meter)
    # ... and its true peak, measured by the master only if the mix's sample peak leaves the limiter
    # nothing to do (then the limiter is skipped); a mix the limiter must touch never pays for it.
    mix_peak: TruePeakMeter | None = None
    with timed_stage(p.clock, "balance", release=p.full), contextlib.ExitStack() as opened:
        backing_source = None
        if p.has_backing:
            # A preview window is small: read it whole. A full render streams the cache file.
            backing_source = plan.array("backing", lo + cut, hi) if window["preview"] else plan.reader("backing")
        try:
            if backing_source is not None:
                # A full render places the vocal against the whole backing, whose raw loudness the
                # analysis already measured: reuse it instead of metering the backing again.
                known_lufs = ((plan.record.get("backing") or {}).get("loudness_lufs") if p.full
                              else _window_backing_lufs(plan, backing_source, lo + cut, hi))
                # ... and the loudness of any dip of it from its ducking moments, kept beside the plan.
                moments = (_ducking_moments(plan, backing_source, wet.shape[1])
                           if p.full and known_lufs is not None and settings.duck_db > 0.0 else None)
                if isinstance(moments, NpyBlockReader):
                    opened.enter_context(moments)
                mix: np.ndarray | None
                mix_meter = LoudnessMeter(ENGINE_SR, channels=wet.shape[0], stereo=wet.shape[0] == 2)
                mix_peak = TruePeakMeter(channels=wet.shape[0])
                mix, balance_report = balance_into(
                    wet,
                    backing_source,
                    sr=ENGINE_SR,
                    vocal_to_backing_lu=settings.vocal_to_backing_lu,
                    duck_db=settings.duck_db,
                    # A full render forms the mix in the wet vocal's own memory; a preview is small, so
                    # a new buffer (the ducker then dips the backing once instead of twice; same sums).
                    out=wet if p.full else None,
                    backing_lufs=float(known_lufs) if known_lufs is not None else None,
                    mix_meter=mix_meter,
                    duck_moments=moments,
                )
            else:
                mix, balance_report = wet, None
        finally:
            if backing_source is not None and not isinstance(backing_source, np.ndarray):
                backing_source.close()
        del wet
    with timed_stage(p.clock, "master", release=p.full):

        def write_master(target_lufs: float = p.resolved.target_lufs, ceiling: float = ceiling_dbtp) -> dict[str, Any]:
            assert mix is not None  # dropped only after the last rewrite
            with AudioWriter(mix_path, sr=ENGINE_SR, channels=2, **(writer_options or {})) as writer:
                return master_stream(mix, sr=ENGINE_SR, writer=writer, target_lufs=target_lufs, ceiling_dbtp=ceiling,
                                     meter=mix_meter, peak_meter=mix_peak)

        master_report = write_master()
    file_check: dict[str, Any] | None = None
    start = time.perf_counter()
    if check_file and mix_path.suffix.lower() in LOSSY_EXTENSIONS:
        # The codec may push the true peak up or move the loudness: measure the file itself (the
        # pre-master mix is still here, so it can be mastered and encoded again at the right level).
        file_check = check_encoded_file(mix_path, target_lufs=p.resolved.target_lufs, master_report=master_report,
                                        remaster=write_master)
        if file_check["master"] is not None:
            master_report = file_check["master"]
    mix = None  # drop the mix (and write_master's hold on it) before the report is built
    p.clock.timings_s["write"] = round(time.perf_counter() - start, 4)
    report = _report(plan, p, balance_report, master_report, ceiling_dbtp=ceiling_dbtp, file_check=file_check)
    if file_check is not None and file_check["warning"]:
        report["warnings"].append(file_check["warning"])
    return report


#: The raw backing's loudness over recent preview windows, per plan: a slider move previews the same
#: window again, and the backing under it has not changed (keyed by the cache file's identity too).
_WINDOW_LUFS: dict[tuple[Any, ...], float] = {}
_WINDOW_LUFS_KEPT = 64


def _window_backing_lufs(plan: Plan, window: Any, start: int, stop: int) -> float | None:
    """The integrated loudness of the backing over ``start:stop`` (``window``), measured once per window."""
    from ..analysis.loudness import integrated_lufs

    try:
        stat = plan.cache_file("backing").stat()
    except (PlanError, OSError):
        return None  # measured by the balance as before
    key = (str(plan.cache_file("backing")), stat.st_size, stat.st_mtime_ns, start, stop)
    if key not in _WINDOW_LUFS:
        if len(_WINDOW_LUFS) >= _WINDOW_LUFS_KEPT:
            _WINDOW_LUFS.pop(next(iter(_WINDOW_LUFS)))
        _WINDOW_LUFS[key] = integrated_lufs(window, sr=ENGINE_SR)
    return _WINDOW_LUFS[key]


def _ducking_moments(plan: Plan, backing: Any, n: int) -> np.ndarray | NpyBlockReader:
    """The backing's :func:`~melisma.render.balance.ducking_moments` over ``n`` samples, kept beside the
    plan (``duck-<key>.npy``): no slider changes them, so only the first full render measures them.
    A kept file is returned as a reader (the caller closes it): read in blocks, never whole in memory.
    """
    from ..render.balance import ducking_moments
    from ..render.ducker import DUCK_CONTROL_SAMPLES, PRESENCE_HIGH_HZ, PRESENCE_LOW_HZ
    from .cache import touch

    folder = plan.scratch_dir()
    expected = (3 * int(backing.shape[0]), -(-n // DUCK_CONTROL_SAMPLES))
    file: Path | None = None
    if folder is not None:
        stat = plan.cache_file("backing").stat()
        payload = {"backing": plan.record.get("cache", {}).get("backing"), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                   "n": n, "sr": ENGINE_SR, "band_hz": [PRESENCE_LOW_HZ, PRESENCE_HIGH_HZ], "step": DUCK_CONTROL_SAMPLES}
        key = hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]
        file = folder / f"duck-{key}.npy"
        if file.exists():
            with contextlib.suppress(OSError, MelismaError):
                kept = NpyBlockReader(file)
                if tuple(kept.shape) == expected and all(
                        np.isfinite(kept.read(a, a + (1 << 18)).sum(dtype=np.float64)) for a in range(0, expected[1], 1 << 18)):
                    touch(file)
                    return kept
                kept.close()
    moments = ducking_moments(backing, sr=ENGINE_SR, n_samples=n)
    if file is not None:
        with contextlib.suppress(OSError, MelismaError), atomic_path(file, overwrite=True) as tmp, \
                NpyWriter(tmp, channels=moments.shape[0]) as writer:
            writer.append(moments)
    return moments


def _report(plan: Plan, p: PreparedRender, balance_report: Any, master_report: dict[str, Any], *,
            ceiling_dbtp: float, file_check: dict[str, Any] | None) -> dict[str, Any]:
    """The mix report: the plan's record plus what this render did."""
    settings, tuning, target = p.resolved.settings, p.resolved.tuning, p.resolved.target_lufs
    report = report_base(plan)
    report["settings"] = {
        "style": settings.style,
        "sliders": dict(settings.sliders),
        "target_lufs": target,
        "correction": tuning.correction,
        "ornaments": tuning.ornaments,
        "mix": settings.to_dict(),
    }
    report["chain"] = p.explanation
    report["balance"] = balance_report
    report["master"] = master_report
    report["loudness"] = loudness_section(master_report, target_lufs=target, ceiling_dbtp=ceiling_dbtp, file_check=file_check)
    if p.pitch_report is not None:
        report["pitch"] = {**report.get("pitch", {}), **p.pitch_report}
    if not p.has_backing:
        report["warnings"].append("no backing track: this is the processed vocal alone")
    if p.window["preview"]:
        report["window"] = {"start_s": p.window["start_s"], "duration_s": p.window["duration_s"]}
        report["warnings"].append("preview window: loudness was matched on the window alone")
    report["timings_s"]["render"] = p.clock.timings_s
    return report


def report_base(plan: Plan) -> dict[str, Any]:
    """The part of every mix report that comes from the plan's record."""
    rec = plan.record
    return {
        "format": "melisma-report",
        "version": 1,
        "melisma_version": __version__,
        "platform": platform.machine(),
        "inputs": rec.get("inputs"),
        "alignment": rec.get("alignment"),
        "cleanup": rec.get("cleanup"),
        "voice": rec.get("voice"),
        "backing": rec.get("backing"),
        **({"pitch": rec["pitch"]} if "pitch" in rec else {}),
        "warnings": list(rec.get("warnings", [])),
        "timings_s": {"analysis": dict(rec.get("timings_s", {}).get("analysis", {}))},
    }


def _corrected(
    plan: Plan, *, lo: int, hi: int, full: bool, settings, keep: int = 0
) -> tuple[np.ndarray | None, dict[str, Any], Path | None]:
    """The pitch-corrected vocal for samples ``lo:hi`` and the correction report.

    A full render's result is cached as a file beside the plan (or in an unsaved plan's work
    folder) and returned as ``(None, report, file)``, to be streamed; otherwise (a preview, or no
    place to cache) as ``(array, report, None)``. A preview reads its window from that file
    when it is there (the full take's correction, so the window is the full render's vocal).
    """
    from ..render.pitch import correct_vocal, correction_key

    pitch = plan.record["pitch"]
    folder = plan.scratch_dir()
    cache_file = folder / f"corrected-{correction_key(pitch, settings)}.npy" if folder is not None else None
    n_total = int(plan.record["cache"]["vocal"]["shape"][0])
    if cache_file is not None and _usable_cache_file(cache_file, (n_total,)):
        _, report = _correction_plan(pitch, settings)
        report["cached"] = True
        if full:
            return None, report, cache_file
        return read_npy(cache_file, start=lo, stop=hi), report, None
    if not full:
        vocal = plan.array("vocal", lo, hi)
        first = max(0, keep - int(PREVIEW_CORRECTION_MARGIN_S * ENGINE_SR))
        vocal[first:], report = correct_vocal(vocal[first:], pitch, sr=ENGINE_SR, settings=settings, start_sample=lo + first)
        return vocal, report, None
    # The vocal read from the plan's file is ours: corrected in place (one take-sized array, not two).
    # A long take's goes into a file-backed buffer first (its pages handed back as the correction
    # moves on), so a 15-minute take's 173 MB are not resident at once.
    from .spill import ANALYSIS_RELEASE_INTERVAL_S, ANALYSIS_SPILL_BYTES, SpilledArray

    buffer = None
    if cache_file is not None and (hi - lo) * 4 > ANALYSIS_SPILL_BYTES:
        buffer = SpilledArray((hi - lo,), folder=folder, release_interval_s=ANALYSIS_RELEASE_INTERVAL_S)
        with NpyBlockReader(plan.cache_file("vocal")) as source:
            for a in range(lo, hi, 1 << 20):
                source.read(a, min(a + (1 << 20), hi), out=buffer.array[a - lo : min(a + (1 << 20), hi) - lo])
        vocal = buffer.array
    else:
        vocal = plan.array("vocal", lo, hi)
    with contextlib.ExitStack() as stack:
        if buffer is not None:
            stack.enter_context(buffer)
        corrected, report = correct_vocal(vocal, pitch, sr=ENGINE_SR, settings=settings, start_sample=lo, in_place=True)
        del vocal
        if cache_file is not None:
            try:
                with atomic_path(cache_file, overwrite=True) as tmp, open(tmp, "wb") as f:
                    np.save(f, corrected, allow_pickle=False)
                return None, report, cache_file
            except (OSError, MelismaError):
                if buffer is not None:
                    corrected = np.array(corrected)  # no cache: keep the corrected vocal in memory
        return corrected, report, None


#: Correction plans (target f0 and report) of recent renders, by the pitch section and settings:
#: a long-running box re-renders the same plan as sliders move, and the plan is the same work each time.
_CORRECTION_PLANS: dict[tuple[int, str], tuple[Any, np.ndarray, dict[str, Any]]] = {}
_CORRECTION_PLANS_KEPT = 4


def _correction_plan(pitch: dict[str, Any], settings) -> tuple[np.ndarray, dict[str, Any]]:
    """:func:`~melisma.render.pitch.plan_correction`, remembered for the last few (pitch, settings)."""
    from ..render.pitch import correction_key, plan_correction

    key = (id(pitch), correction_key(pitch, settings))
    found = _CORRECTION_PLANS.get(key)
    if found is None or found[0] is not pitch:
        target, report = plan_correction(pitch, settings)
        found = (pitch, target, report)
        _CORRECTION_PLANS[key] = found
        while len(_CORRECTION_PLANS) > _CORRECTION_PLANS_KEPT:
            del _CORRECTION_PLANS[next(iter(_CORRECTION_PLANS))]
    return found[1], dict(found[2])  # callers only add top-level keys
