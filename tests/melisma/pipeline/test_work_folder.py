"""The one-tap mix's plan is never saved: its work folder goes when the mix ends, however it ends.

The render's failure is injected (a full disk at the render, raised where the real one surfaces);
tests/melisma/device/test_box_faults.py fills a real tmpfs for the same path through the box. The
error is kept alive with its traceback, as a job runner that reports it does: the folder must not
wait for the garbage collector.
"""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from melisma import pipeline
from melisma.pipeline import files

from tools.corpus.scenarios import make_scenario, write_scenario


def _work_folders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob(".melisma-work-*"))


@pytest.fixture(scope="module")
def take_and_backing(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    sc = make_scenario(seed=5, duration_s=4.0, sr=48000, offset_ms=120.0, bleed_db=-14.0, snr_db=30.0,
                       backing_renderer="numpy")
    return write_scenario(sc, folder, take_format="wav", backing_format="wav")


def test_a_render_that_fails_leaves_no_work_folder(tmp_path, take_and_backing, monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files, "_render_files", disk_full)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(OSError) as failed:
        pipeline.mix_files(take_and_backing["take"], take_and_backing["backing"], out / "mix.wav")
    assert failed.value.errno == errno.ENOSPC and failed.tb is not None  # the traceback (and its frames) still held
    assert _work_folders(out) == [] and list(out.iterdir()) == []


def test_a_mix_that_succeeds_leaves_only_its_outputs(tmp_path, take_and_backing):
    out = tmp_path / "out"
    out.mkdir()
    pipeline.mix_files(take_and_backing["take"], take_and_backing["backing"], out / "mix.wav")
    assert sorted(p.name for p in out.iterdir()) == ["mix.wav"]
