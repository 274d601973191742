"""The CLI against a hostile user (issue 16): every case one line, the README's exit code, nothing lost.

Each case runs the real ``melisma`` console script in a subprocess, in a fresh folder holding a
generated take, backing and plan, and checks: the exit code; one line on stderr naming the
problem (never a traceback); no partial output and no temporary file left; every file that was
there before unchanged (inputs intact, nothing overwritten).

Cases that need another user's view of permissions run under ``unshare --user`` when the tests run
as root (root ignores file modes); the full disk is a real small tmpfs in a user and mount
namespace; the over-large file is ``ulimit -f``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from melisma import audio_io, pipeline

SR = 48000
EXE = Path(sys.executable).with_name("melisma")


def _unshare_ok(*flags: str) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", *flags, "true"], capture_output=True)
    return probe.returncode == 0


#: Run as a user that file modes apply to (root bypasses them).
UNPRIVILEGED: tuple[str, ...] | None = ()
if os.geteuid() == 0:
    UNPRIVILEGED = ("unshare", "--user") if _unshare_ok("--user") else None
TMPFS_OK = _unshare_ok("--user", "--map-root-user", "--mount")


def _pair(folder: Path, seconds: float, take: str = "take.wav", backing: str = "backing.wav") -> None:
    """A sung-like take with the backing bleeding in 120 ms late (phone speaker on), and the backing."""
    back = _tone(seconds, 110.0, channels=2) * 0.5
    back = (back + 0.01 * np.random.default_rng(1).standard_normal(back.shape)).astype(np.float32)
    voice = _tone(seconds)
    lag = int(0.120 * SR)
    voice[lag:] += 0.5 * back.mean(axis=0)[:-lag]
    audio_io.write_audio(folder / take, voice, sr=SR, overwrite=True)
    audio_io.write_audio(folder / backing, back, sr=SR, overwrite=True)


def _tone(seconds: float, f: float = 220.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    f0 = f * 2 ** (0.3 * np.sin(2 * np.pi * 5.5 * t) / 12)
    y = (0.2 * np.sin(2 * np.pi * np.cumsum(f0) / SR) * np.minimum(1, t * 4)).astype(np.float32)
    return y if channels == 1 else np.stack([y, 0.5 * y]).astype(np.float32)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("hostile-src")
    _pair(d, 1.5)
    pipeline.analyze_files(d / "take.wav", d / "backing.wav", d / "plan.json")
    return d


def _snapshot(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_symlink():
            out[str(p.relative_to(root))] = "link:" + os.readlink(p)
        elif p.is_file():
            try:
                out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
            except PermissionError:
                out[str(p.relative_to(root))] = "unreadable"
        elif p.is_dir():
            out[str(p.relative_to(root)) + "/"] = "dir"
    return out


def melisma(args: list[str], cwd: Path, prefix: tuple[str, ...] = (), timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, str(EXE), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


# ----------------------------------------------------------------------------------------------
# The cases: (id, args, setup(work dir), exit code, words in the message, prefix kind)


def _plan_edit(change):
    def setup(w: Path) -> None:
        record = json.loads((w / "plan.json").read_text())
        change(record)
        (w / "plan.json").write_text(json.dumps(record))
    return setup


def _set(*path_and_value):
    *path, value = path_and_value

    def change(record):
        d = record
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value
    return change


def _drop_note_starts(record):
    for note in record["pitch"]["notes"]:
        note.pop("start_s", None)


def _write(name: str, data: bytes | str):
    def setup(w: Path) -> None:
        (w / name).write_bytes(data if isinstance(data, bytes) else data.encode())
    return setup


def _chmod(name: str, mode: int, *, mkdir: bool = False):
    def setup(w: Path) -> None:
        if mkdir:
            (w / name).mkdir()
        os.chmod(w / name, mode)
    return setup


def _one_hz(w: Path) -> None:
    import wave

    with wave.open(str(w / "one.wav"), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(1)
        f.writeframes(np.array([0, 10000, -10000, 5000] * 5, np.int16).tobytes())


R = ["render", "plan.json", "-o", "out.wav", "-q"]
MIX = ["mix", "take.wav", "backing.wav", "-q"]
CASES = [
    # malformed plan fields
    ("plan-pitch-null", R, _plan_edit(_set("pitch", None)), 6, "plan is damaged", ""),
    ("plan-pitch-empty", R, _plan_edit(_set("pitch", {})), 6, "plan is damaged", ""),
    ("plan-notes-no-start", R, _plan_edit(_drop_note_starts), 6, "missing field 'start_s'", ""),
    ("plan-settings-list", R, _plan_edit(_set("settings", [1, 2])), 6, "plan is damaged", ""),
    ("plan-shape-text", R, _plan_edit(_set("cache", "vocal", "shape", ["x"])), 6, "plan is damaged", ""),
    ("plan-nested-200k", R, _write("plan.json", "[" * 200_000 + "]" * 200_000), 6, "nested too deep", ""),
    ("plan-not-json", R, _write("plan.json", b"\xff\xfe{garbage"), 6, "not a Melisma plan", ""),
    ("plan-is-directory", ["render", "pd", "-o", "out.wav", "-q"], lambda w: (w / "pd").mkdir(), 6, "is a directory", ""),
    ("plan-unreadable", R, _chmod("plan.json", 0), 6, "permission denied", "unprivileged"),
    # writing
    ("name-over-255-bytes", [*MIX, "-o", "x" * 300 + ".wav"], None, 3, "file name is 304 bytes", ""),
    ("name-over-255-bytes-utf8", [*MIX, "-o", "混" * 90 + ".wav"], None, 3, "file name is 274 bytes", ""),
    ("output-symlink-loop", [*MIX, "-o", "loop.wav"], lambda w: os.symlink("loop.wav", w / "loop.wav"), 3,
     "symlink loop", ""),
    ("output-dangling-link", [*MIX, "-o", "gone.wav"], lambda w: os.symlink("nowhere/x.wav", w / "gone.wav"), 3,
     "symlink to nowhere", ""),
    ("output-parent-is-file", [*MIX, "-o", "take.wav/mix.wav"], None, 3, "is a file, not a folder", ""),
    ("output-parent-missing", [*MIX, "-o", "nope/mix.wav"], None, 3, "no such directory", ""),
    ("output-read-only-dir", [*MIX, "-o", "ro/mix.wav"], _chmod("ro", 0o555, mkdir=True), 3, "permission denied",
     "unprivileged"),
    ("output-is-directory", [*MIX, "-o", "d"], lambda w: (w / "d").mkdir(), 3, "is a directory", ""),
    ("report-is-directory", [*MIX, "-o", "m.wav", "--report", "d"], lambda w: (w / "d").mkdir(), 3, "is a directory", ""),
    ("plan-cache-is-a-file", ["analyze", "take.wav", "backing.wav", "-o", "p2.json", "-q"],
     _write("p2.json.cache", "x"), 3, "p2.json.cache: is a file", ""),
    ("efbig", [*MIX, "-o", "big.wav"], None, 3, "larger than this file system", "fsize"),
    ("enospc", [*MIX, "-o", "full/m.wav"], lambda w: (w / "full").mkdir(), 3, "no space left", "tmpfs"),
    # outputs that are inputs, even with --force
    ("mix-over-take", ["mix", "take.wav", "backing.wav", "-o", "take.wav", "--force", "-q"], None, 2,
     "would destroy it", ""),
    ("mix-over-backing", ["mix", "take.wav", "backing.wav", "-o", "backing.wav", "--force", "-q"], None, 2,
     "would destroy it", ""),
    ("analyze-over-backing", ["analyze", "take.wav", "backing.wav", "-o", "backing.wav", "--force", "-q"], None, 2,
     "would destroy it", ""),
    ("analyze-over-take-via-link", ["analyze", "take.wav", "-o", "alias.json", "--force", "-q"],
     lambda w: os.symlink("take.wav", w / "alias.json"), 2, "would destroy it", ""),
    ("render-over-plan", ["render", "plan.json", "-o", "out.wav", "--report", "plan.json", "--force", "-q"], None, 2,
     "would destroy it", ""),
    ("correct-over-take", ["correct", "take.wav", "-o", "take.wav", "--force", "-q"], None, 2, "would destroy it", ""),
    # minor
    ("take-1-hz", ["mix", "one.wav", "backing.wav", "-o", "m.wav", "-q"], _one_hz, 4, "sampled at 1 Hz", ""),
    ("take-dc-only", ["mix", "dc.wav", "backing.wav", "-o", "m.wav", "-q"],
     lambda w: audio_io.write_audio(w / "dc.wav", np.full(2 * SR, 0.5, np.float32), sr=SR), 4,
     "only a constant level", ""),
    ("take-unreadable", ["mix", "take.wav", "backing.wav", "-o", "m.wav", "-q"], _chmod("take.wav", 0), 3,
     "permission denied", "unprivileged"),
    ("preview-past-the-end", ["render", "plan.json", "-o", "p.wav", "--start", "1.2", "--duration", "5", "-q"], None, 2,
     "runs past the end", ""),
    ("preview-after-the-end", ["render", "plan.json", "-o", "p.wav", "--start", "30", "-q"], None, 2,
     "outside the take", ""),
]
# generated garbage takes: random bytes with the extensions phones use
for i, ext in enumerate([".m4a", ".mp3", ".wav", ".ogg", ".amr", ".flac"]):
    data = np.random.default_rng(i).integers(0, 256, 2000 + 997 * i, dtype=np.uint8).tobytes()
    if ext == ".wav":
        data = b"RIFF" + data[4:]  # looks like a WAV for four bytes
    CASES.append((f"garbage-take{ext}", ["mix", f"g{ext}", "backing.wav", "-o", "m.wav", "-q"],
                  _write(f"g{ext}", data), 3, f"g{ext}: ", ""))


def _prefix(kind: str, work: Path) -> tuple[str, ...]:
    if kind == "unprivileged":
        if UNPRIVILEGED is None:
            pytest.skip("running as root without user namespaces: file modes cannot be tested")
        return UNPRIVILEGED
    if kind == "fsize":
        return ("sh", "-c", 'ulimit -f 200; exec "$@"', "sh")
    if kind == "tmpfs":
        if not TMPFS_OK:
            pytest.skip("no user+mount namespaces here (unshare): no small real file system")
        return ("unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                f'mount -t tmpfs -o size=200k tmpfs {work / "full"} && exec "$@"', "sh")
    return ()


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_hostile_case_fails_in_one_line_and_loses_nothing(case, source, tmp_path):
    _, args, setup, code, words, kind = case
    work = tmp_path / "w"
    shutil.copytree(source, work)
    if setup is not None:
        setup(work)
    before = _snapshot(work)
    proc = melisma(args, work, _prefix(kind, work))
    for p in work.rglob("*"):  # let the checks below read what the case made unreadable
        if not p.is_symlink():
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
    after = _snapshot(work)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == code, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1 and lines[0].startswith("melisma: error: "), proc.stderr[-2000:]
    assert words in lines[0], lines[0]
    assert {k: v for k, v in after.items() if v != "unreadable"} == {
        k: v for k, v in before.items() if v != "unreadable"}, "a file was written, changed or removed"


# ----------------------------------------------------------------------------------------------
# Killed runs, signals, leftovers, modes


def _long_inputs(work: Path) -> None:
    _pair(work, 40.0, "long-take.wav", "long-backing.wav")


def _start_mix(work: Path, out: str = "mix.wav") -> subprocess.Popen:
    return subprocess.Popen([str(EXE), "mix", "long-take.wav", "long-backing.wav", "-o", out, "-q"], cwd=work,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_work(work: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        if any(p.name.startswith(".melisma-work-") for p in work.iterdir()):
            time.sleep(0.3)  # well into the analysis
            return
        time.sleep(0.02)
    raise AssertionError("the mix never started its analysis")


def test_sigterm_is_handled_like_ctrl_c(tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    _long_inputs(work)
    before = _snapshot(work)
    proc = _start_mix(work)
    _wait_for_work(work, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert err.strip() == "melisma: terminated (SIGTERM); nothing was written"
    assert _snapshot(work) == before  # no mix, no temporary file, no work folder


def test_leftovers_of_a_killed_run_are_removed_by_the_next_run_in_the_same_place(tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    _long_inputs(work)
    proc = _start_mix(work)
    _wait_for_work(work, proc)
    proc.kill()
    proc.wait(10)
    left = sorted(p.name for p in work.iterdir() if p.name.startswith("."))
    assert left and all(n.startswith(".melisma-work-") or ".melisma-" in n for n in left)
    # someone else's files that merely look similar, and a live run's temporary file, are not touched
    (work / ".mix.wav.part").write_bytes(b"mine")
    (work / ".melisma-work-notes").mkdir()
    live = work / f".other.wav.melisma-{os.getpid()}-abcd1234.part.wav"
    live.write_bytes(b"being written right now")
    _pair(work, 1.5)
    done = melisma(["mix", "take.wav", "backing.wav", "-o", "mix.wav", "-q"], work)
    assert done.returncode == 0, done.stderr
    now = sorted(p.name for p in work.iterdir() if p.name.startswith("."))
    assert now == sorted([".mix.wav.part", ".melisma-work-notes", live.name])


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_follow_the_umask(source, tmp_path, umask, mode):
    work = tmp_path / "w"
    shutil.copytree(source, work)
    proc = melisma(["render", "plan.json", "-o", "out.wav", "--report", "r.json", "-q"], work,
                   ("sh", "-c", f'umask {umask:03o}; exec "$@"', "sh"))
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE((work / "out.wav").stat().st_mode) == mode
    assert stat.S_IMODE((work / "r.json").stat().st_mode) == mode


def test_force_keeps_the_mode_of_the_file_it_replaces(source, tmp_path):
    work = tmp_path / "w"
    shutil.copytree(source, work)
    (work / "out.wav").write_bytes(b"old")
    os.chmod(work / "out.wav", 0o644)
    proc = melisma(["render", "plan.json", "-o", "out.wav", "--force", "-q"], work,
                   ("sh", "-c", 'umask 077; exec "$@"', "sh"))
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE((work / "out.wav").stat().st_mode) == 0o644
    assert (work / "out.wav").read_bytes() != b"old"


@pytest.mark.parametrize("args, words", [
    (["mix", "take.wav", "take.wav", "-o", "m.wav"], "take and backing are the same file"),
    (["mix", "backing.wav", "take.wav", "-o", "m.wav"], "take and backing look swapped"),
])
def test_same_file_and_swapped_inputs_are_warned_about(source, tmp_path, args, words):
    work = tmp_path / "w"
    shutil.copytree(source, work)
    proc = melisma(args, work)
    assert proc.returncode == 0, proc.stderr
    assert f"warning:   {words}" in proc.stdout
