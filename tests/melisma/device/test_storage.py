"""Storage on the box: atomic uploads, resume after an interruption, safe names."""

from __future__ import annotations

import hashlib
import os

import pytest
from melisma.device.storage import Storage, StorageError
from melisma.protocol import ErrorCode, FileKind


def _digest(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def test_interrupted_upload_never_appears_and_resumes(tmp_path):
    data = os.urandom(10_000)
    store = Storage(tmp_path)
    up = store.begin_upload(FileKind.TAKE, "take.m4a", len(data), _digest(data))
    up.write(0, data[:4000])
    up.close()  # the link dropped
    assert store.list() == []
    assert not (tmp_path / "takes" / "take.m4a").exists()
    # a new session (even a new Storage object, as after a restart) resumes from the offset
    store2 = Storage(tmp_path)
    assert store2.partial_uploads()[0]["received"] == 4000
    up2 = store2.begin_upload(FileKind.TAKE, "take.m4a", len(data), _digest(data))
    assert up2.offset == 4000
    with pytest.raises(StorageError) as exc:
        up2.write(0, data[:100])
    assert exc.value.code == ErrorCode.BAD_OFFSET
    up2.write(4000, data[4000:])
    entry = up2.commit()
    assert entry.sha256 == _digest(data) and entry.size == len(data)
    assert (tmp_path / "takes" / "take.m4a").read_bytes() == data
    assert store2.partial_uploads() == []
    assert [e.name for e in store2.list(FileKind.TAKE)] == ["take.m4a"]


def test_checksum_mismatch_discards_and_keeps_nothing(tmp_path):
    store = Storage(tmp_path)
    data = b"a" * 100
    up = store.begin_upload(FileKind.BACKING, "b.wav", 100, _digest(b"b" * 100))
    up.write(0, data)
    with pytest.raises(StorageError) as exc:
        up.commit()
    assert exc.value.code == ErrorCode.BAD_CHECKSUM
    assert store.list() == [] and store.partial_uploads() == []


def test_commit_before_complete_and_overlong_chunks(tmp_path):
    store = Storage(tmp_path)
    up = store.begin_upload(FileKind.TAKE, "t.wav", 10, _digest(b"0123456789"))
    up.write(0, b"01234")
    with pytest.raises(StorageError, match="5 of 10 bytes"):
        up.commit()
    with pytest.raises(StorageError) as exc:
        up.write(5, b"too many bytes")
    assert exc.value.code == ErrorCode.TOO_LARGE


def test_limits_and_names(tmp_path):
    store = Storage(tmp_path, max_file_size=1000)
    with pytest.raises(StorageError) as exc:
        store.begin_upload(FileKind.TAKE, "t.wav", 1001, _digest(b""))
    assert exc.value.code == ErrorCode.TOO_LARGE and "1000 bytes" in str(exc.value)
    for bad in ("../t.wav", "t.exe", ".t.wav"):
        with pytest.raises(StorageError) as exc:
            store.path(FileKind.TAKE, bad)
        assert exc.value.code == ErrorCode.BAD_NAME
    with pytest.raises(StorageError) as exc:
        store.existing(FileKind.MIX, "nope.wav")
    assert exc.value.code == ErrorCode.NOT_FOUND


def test_list_checksums_follow_content_and_delete(tmp_path):
    store = Storage(tmp_path)
    p = store.path(FileKind.MIX, "m.wav")
    p.write_bytes(b"one")
    assert store.entry(FileKind.MIX, "m.wav").sha256 == _digest(b"one")
    p.write_bytes(b"two!")
    assert store.entry(FileKind.MIX, "m.wav").sha256 == _digest(b"two!")
    (tmp_path / "mixes" / ".m.wav.tmp.part.wav").write_bytes(b"temp")  # an engine temp file
    assert [e.name for e in store.list()] == ["m.wav"]
    store.delete(FileKind.MIX, "m.wav")
    assert store.list() == []


def test_storage_limits_evict_previews_and_plan_work_files_least_recently_used(tmp_path):
    import os

    from melisma.device.config import parse_config
    from melisma.device.storage import StorageLimits

    cfg = parse_config("[storage]\npreviews_mib = 1\nwork_mib = 2\nplan_cache_mib = 3\n")
    assert (cfg.storage.previews_mib, cfg.storage.work_mib, cfg.storage.plan_cache_mib) == (1, 2, 3)
    store = Storage(tmp_path, limits=StorageLimits.from_config(cfg.storage))
    mib = b"x" * (1 << 20)
    previews = []
    for i in range(3):
        p = store.path(FileKind.PREVIEW, f"p{i}.ogg")
        p.write_bytes(mib)
        os.utime(p, (1000 + i, 1000 + i))
        previews.append(p)
    for plan, age in (("a.json", 0), ("b.json", 10)):
        store.path(FileKind.PLAN, plan).write_text("{}")
        folder = store.path(FileKind.PLAN, plan).with_name(plan + ".cache")
        folder.mkdir()
        for name in ("vocal.npy", "corrected-1.npy", "dry-1.npy"):
            (folder / name).write_bytes(mib)
            os.utime(folder / name, (2000 + age, 2000 + age))
    deleted = store.enforce_limits(keep=(previews[0],))
    names = sorted(str(p.relative_to(tmp_path)) for p in deleted)
    # previews: 1 MiB allowed, the newest is p2 but p0 is kept (the job's output): p1 and p2 go
    assert "previews/p1.ogg" in names and "previews/p2.ogg" in names and previews[0].exists()
    # work files: 2 MiB over both plans, the older plan's corrected and dry vocals go; analysis stays
    assert "plans/a.json.cache/corrected-1.npy" in names and "plans/a.json.cache/dry-1.npy" in names
    assert (tmp_path / "plans/b.json.cache/dry-1.npy").exists()
    assert (tmp_path / "plans/a.json.cache/vocal.npy").exists()
    assert [e.name for e in store.list(FileKind.PLAN)] == ["a.json", "b.json"]


def test_storage_limit_keys_are_range_checked():
    import pytest
    from melisma.device.config import parse_config
    from melisma.errors import ConfigError

    with pytest.raises(ConfigError, match=r"storage\.previews_mib = -1"):
        parse_config("[storage]\npreviews_mib = -1\n")
