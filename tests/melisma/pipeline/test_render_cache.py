"""The render caches beside a plan: what is kept, that it is reused exactly, and that it is evicted
least recently used first under a size limit (environment or box.toml)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from melisma import audio_io, pipeline
from melisma.errors import ConfigError
from melisma.pipeline import cache

from tools.corpus import make_scenario
from tools.corpus.scenarios import write_scenario


@pytest.fixture(scope="module")
def plan_path(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cache")
    sc = make_scenario(seed=21, duration_s=6.0, backing_renderer="numpy", offset_ms=80.0, bleed_db=-16.0, snr_db=25.0)
    paths = write_scenario(sc, folder / "in", take_format="wav", backing_format="wav")
    plan = folder / "plan.json"
    pipeline.analyze_files(paths["take"], paths["backing"], plan, style="cpop")
    return plan


def _render_caches(plan: Path) -> list[str]:
    folder = plan.with_name(plan.name + ".cache")
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(("corrected-", "dry-", "toned-")))


def test_a_rerender_reuses_the_kept_vocals_bit_for_bit(plan_path, tmp_path):
    first = pipeline.render_plan(plan_path, tmp_path / "a.wav", sliders={"reverb": 0.3})
    kept = _render_caches(plan_path)
    assert [n.split("-")[0] for n in kept] == ["corrected", "dry", "toned"]
    assert (plan_path.with_name(plan_path.name + ".cache") / "filters.json").is_file()
    again = pipeline.render_plan(plan_path, tmp_path / "b.wav", sliders={"reverb": 0.3})
    assert again["pitch"]["cached"] is True and first["pitch"].get("cached") is not True
    a, _ = audio_io.load_audio(tmp_path / "a.wav")
    b, _ = audio_io.load_audio(tmp_path / "b.wav")
    assert np.array_equal(a, b)
    # a reverb move runs the space alone over the toned vocal: nothing new is kept
    pipeline.render_plan(plan_path, tmp_path / "c.wav", sliders={"reverb": -0.5})
    assert _render_caches(plan_path) == kept
    # a warmth move keeps its own toned vocal, made from the same dry one
    moved = pipeline.render_plan(plan_path, tmp_path / "d.wav", sliders={"reverb": -0.5, "warmth": 0.4})
    added = sorted(set(_render_caches(plan_path)) - set(kept))
    assert len(added) == 1 and added[0].startswith("toned-") and set(kept) <= set(_render_caches(plan_path))
    assert moved["pitch"]["cached"] is True
    # ... and the renders from kept vocals are the renders from scratch, to the bit
    folder = plan_path.with_name(plan_path.name + ".cache")
    for name in _render_caches(plan_path):
        (folder / name).unlink()
    for name, sliders in (("c", {"reverb": -0.5}), ("d", {"reverb": -0.5, "warmth": 0.4})):
        pipeline.render_plan(plan_path, tmp_path / f"{name}-fresh.wav", sliders=sliders)
        kept_audio, _ = audio_io.load_audio(tmp_path / f"{name}.wav")
        fresh_audio, _ = audio_io.load_audio(tmp_path / f"{name}-fresh.wav")
        assert np.array_equal(kept_audio, fresh_audio), name


def test_the_backings_ducking_moments_are_kept_once_and_a_damaged_file_is_measured_again(plan_path, tmp_path):
    folder = plan_path.with_name(plan_path.name + ".cache")
    first = pipeline.render_plan(plan_path, tmp_path / "d0.wav", sliders={"reverb": 0.2})
    assert first["settings"]["mix"]["duck_db"] > 0  # cpop ducks: the moments are used
    kept = sorted(folder.glob("duck-*.npy"))
    assert len(kept) == 1
    inode = kept[0].stat().st_ino
    pipeline.render_plan(plan_path, tmp_path / "d1.wav", sliders={"reverb": 0.6, "warmth": -0.3})
    assert [p.stat().st_ino for p in folder.glob("duck-*.npy")] == [inode]  # reused, not written again
    kept[0].write_bytes(b"\x93NUMPY damaged")
    again = pipeline.render_plan(plan_path, tmp_path / "d2.wav", sliders={"reverb": 0.2})
    assert np.load(kept[0]).shape[0] == 6  # measured again and replaced (3 sums x 2 channels)
    a, _ = audio_io.load_audio(tmp_path / "d0.wav")
    b, _ = audio_io.load_audio(tmp_path / "d2.wav")
    assert np.array_equal(a, b)
    assert again["balance"]["vocal_gain_db"] == first["balance"]["vocal_gain_db"]


def test_the_limit_evicts_least_recently_used_and_a_rerender_makes_them_again(plan_path, tmp_path, monkeypatch):
    folder = plan_path.with_name(plan_path.name + ".cache")
    pipeline.render_plan(plan_path, tmp_path / "t0.wav", sliders={"tuning": 0.0})
    size = max(p.stat().st_size for p in folder.glob("corrected-*.npy"))
    # room for exactly three render files (the corrected, dry and toned vocal): older ones must go
    monkeypatch.setenv(cache.ENV_PLAN_CACHE, str(3.5 * size / (1 << 20)))
    renders = []
    for i, tuning in enumerate((-0.4, 0.5, 0.9)):
        pipeline.render_plan(plan_path, tmp_path / f"t{i + 1}.wav", sliders={"tuning": tuning})
        renders.append(set(_render_caches(plan_path)))
        time.sleep(0.01)
    assert all(len(r) <= 3 for r in renders)
    assert renders[-1].isdisjoint(renders[0])  # the oldest setting's files were evicted
    assert (folder / "vocal.npy").is_file() and (folder / "backing.npy").is_file()  # the analysis never goes
    # re-rendering an evicted setting makes its files again and sounds the same
    before, _ = audio_io.load_audio(tmp_path / "t1.wav")
    pipeline.render_plan(plan_path, tmp_path / "t1-again.wav", sliders={"tuning": -0.4})
    after, _ = audio_io.load_audio(tmp_path / "t1-again.wav")
    assert np.array_equal(before, after)


def test_limit_zero_keeps_nothing_and_bad_limits_are_refused(plan_path, tmp_path, monkeypatch):
    monkeypatch.setenv(cache.ENV_PLAN_CACHE, "0")
    pipeline.render_plan(plan_path, tmp_path / "z.wav", sliders={"tuning": -0.2})
    assert _render_caches(plan_path) == []
    monkeypatch.setenv(cache.ENV_PLAN_CACHE, "lots")
    with pytest.raises(ConfigError, match="MELISMA_PLAN_CACHE_MIB"):
        cache.plan_cache_limit_bytes()
    monkeypatch.delenv(cache.ENV_PLAN_CACHE)
    with pytest.raises(ConfigError, match="out of range"):
        cache.set_plan_cache_limit(-1)
    cache.set_plan_cache_limit(1)
    try:
        assert cache.plan_cache_limit_bytes() == 1 << 20
    finally:
        cache.set_plan_cache_limit(None)
    assert cache.plan_cache_limit_bytes() == cache.DEFAULT_PLAN_CACHE_MIB << 20


def test_enforce_limit_orders_by_last_use_and_spares_kept_and_hidden_files(tmp_path):
    for i, name in enumerate(("dry-1.npy", "dry-2.npy", "corrected-3.npy", ".dry-4.npy", "vocal.npy")):
        (tmp_path / name).write_bytes(b"x" * 100)
        os.utime(tmp_path / name, (1000 + i, 1000 + i))
    cache.touch(tmp_path / "dry-1.npy")  # used just now: newest
    deleted = cache.enforce_limit(tmp_path, max_bytes=200, keep=[tmp_path / "dry-2.npy"])
    assert [p.name for p in deleted] == ["corrected-3.npy"]  # oldest dry-2 is kept (it still counts), then corrected-3
    deleted = cache.enforce_limit(tmp_path, max_bytes=100, keep=[tmp_path / "dry-2.npy"])
    assert [p.name for p in deleted] == ["dry-1.npy"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".dry-4.npy", "dry-2.npy", "vocal.npy"]


def test_a_fresh_process_rerender_designs_nothing_and_loads_no_scipy_signal(plan_path, tmp_path):
    # The first render keeps every filter design beside the plan; a later render in a new process
    # (what the CLI and the box pay for a slider move) must then not import scipy.signal, whose
    # import alone costs ~50 MB of resident memory and about a second of CPU on the box.
    import json
    import subprocess
    import sys

    pipeline.render_plan(plan_path, tmp_path / "first.wav", sliders={"reverb": 0.2, "air": 0.5})
    code = (
        "import sys, json\n"
        "from melisma import pipeline\n"
        f"pipeline.render_plan({str(plan_path)!r}, {str(tmp_path / 'again.wav')!r}, sliders={{'reverb': 0.6, 'air': 0.5}})\n"
        "print(json.dumps(sorted(m for m in ('scipy.signal', 'scipy.stats', 'scipy.interpolate') if m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == []


def test_a_preview_of_the_same_window_measures_the_backing_under_it_once(plan_path, tmp_path, monkeypatch):
    from melisma.analysis import loudness

    first = pipeline.render_plan(plan_path, tmp_path / "p0.wav", start_s=1.0, duration_s=3.0, sliders={"warmth": 0.2})
    calls: list[int] = []
    real = loudness.integrated_lufs
    monkeypatch.setattr(loudness, "integrated_lufs", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = pipeline.render_plan(plan_path, tmp_path / "p1.wav", start_s=1.0, duration_s=3.0, sliders={"warmth": 0.2})
    assert calls == []  # the window's backing loudness was kept from the first preview
    a, _ = audio_io.load_audio(tmp_path / "p0.wav")
    b, _ = audio_io.load_audio(tmp_path / "p1.wav")
    assert np.array_equal(a, b) and again["balance"] == first["balance"]
    pipeline.render_plan(plan_path, tmp_path / "p2.wav", start_s=2.0, duration_s=3.0)  # another window: measured
    assert len(calls) == 1


def test_warming_keeps_the_corrected_dry_and_toned_vocals_that_renders_then_reuse(plan_path, tmp_path):
    """What the box runs right after analysing: the next full render and preview start from the kept
    vocals, and sound as renders from scratch do; a warmth change warms only its own toned vocal."""
    from melisma.pipeline.render import warm_render_caches

    folder = plan_path.with_name(plan_path.name + ".cache")
    for name in _render_caches(plan_path):
        (folder / name).unlink()
    plan = pipeline.Plan.load(plan_path)
    dry = warm_render_caches(plan, style="cpop", sliders={"warmth": 0.2})
    kept = _render_caches(plan_path)
    assert dry is not None and dry.name in kept and [n.split("-")[0] for n in kept] == ["corrected", "dry", "toned"]
    warmed = pipeline.render_plan(plan_path, tmp_path / "w.wav", style="cpop", sliders={"warmth": 0.2, "reverb": 0.3})
    assert warmed["pitch"]["cached"] is True and _render_caches(plan_path) == kept  # nothing made again
    warm_render_caches(plan, style="cpop", sliders={"warmth": -0.6})
    added = sorted(set(_render_caches(plan_path)) - set(kept))
    assert len(added) == 1 and added[0].startswith("toned-")
    for name in _render_caches(plan_path):
        (folder / name).unlink()
    pipeline.render_plan(plan_path, tmp_path / "s.wav", style="cpop", sliders={"warmth": 0.2, "reverb": 0.3})
    a, _ = audio_io.load_audio(tmp_path / "w.wav")
    b, _ = audio_io.load_audio(tmp_path / "s.wav")
    assert np.array_equal(a, b)
