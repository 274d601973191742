"""Fixtures for the updater tests: real keys, real bundles from tools/build-bundle, scratch roots.

Test bundles are built once per session with ``--deps external`` (the melisma wheel, the models,
the units and the default config; not numpy, bumble & co.), and slots are installed with
``--dev-site-packages`` pointing at this test environment's site-packages, so each install takes
seconds instead of unpacking ~150 MB of wheels. Everything else is the real path: signature,
digests, a real venv per slot built by ``python -m venv``, the real melisma wheel installed by
pip offline, the slot's own ``melisma selftest``, the atomic link switch, the health check.
``test_full_bundle.py`` installs one complete bundle (all wheels) to show that path too.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
BUILD = REPO / "tools" / "build-bundle"
BIN = Path(sys.executable).parent
UPDATE = [sys.executable, "-m", "melisma.update.cli"]
SITE = site.getsitepackages()[0]


def run_update(*args: str, env: dict | None = None, check: bool = False) -> subprocess.CompletedProcess:
    """Run melisma-update in a subprocess (a real process, killable)."""
    proc = subprocess.run([*UPDATE, *args], capture_output=True, text=True, env=env, timeout=600,
                          cwd=REPO)
    if check and proc.returncode != 0:
        raise AssertionError(f"melisma-update {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def install_args(bundle: Path, root: Path, *extra: str) -> list[str]:
    return ["install", str(bundle), "--root", str(root), "--dev-site-packages", SITE, *extra]


def status(root: Path) -> dict:
    proc = run_update("status", "--root", str(root), "--json", check=True)
    return json.loads(proc.stdout)


def slot_version(path: Path) -> str:
    """What ``PATH/bin/melisma --version`` prints (the version part)."""
    out = subprocess.run([str(path / "bin" / "melisma"), "--version"], capture_output=True, text=True, timeout=120,
                         env={k: v for k, v in os.environ.items() if not k.startswith("PYTHON")})
    assert out.returncode == 0, out.stderr
    return out.stdout.split()[-1]


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under root with its type, link target, size and (small files) content digest."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            st = p.lstat()
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir",)
            else:
                digest = hashlib.sha256(p.read_bytes()).hexdigest() if st.st_size < 1 << 20 else st.st_mtime_ns
                out[rel] = ("file", st.st_size, digest)
    return out


def build(out: Path, version: str, key: Path, *extra: str) -> Path:
    proc = subprocess.run([sys.executable, str(BUILD), "--target", "host", "--key", str(key), "--version", version,
                           "-o", str(out), "--deps", "external", *extra], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return out


class Bundles:
    """Keys and bundles shared by the session."""

    def __init__(self, d: Path):
        self.dir = d
        self.keys = d / "keys"
        self.other_keys = d / "other-keys"
        run_update("keygen", "--out", str(self.keys), check=True)
        run_update("keygen", "--out", str(self.other_keys), check=True)
        key = self.keys / "signing.key"
        self.v1 = build(d / "melisma-1.0.0.mlb", "1.0.0", key)
        self.v2 = build(d / "melisma-2.0.0.mlb", "2.0.0", key)
        self.v3 = build(d / "melisma-3.0.0.mlb", "3.0.0", key)
        self.other_key_v3 = build(d / "other-key-3.0.0.mlb", "3.0.0", self.other_keys / "signing.key")
        proc = subprocess.run([sys.executable, str(BUILD), "--target", "linux-aarch64", "--key", str(key),
                               "--version", "3.0.0", "-o", str(d / "aarch64-3.0.0.mlb"), "--deps", "external"],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        self.aarch64_v3 = d / "aarch64-3.0.0.mlb"
        # a validly signed bundle whose pitch model is broken: its self-test must fail
        bad_models = d / "bad-models"
        shutil.copytree(REPO / "models", bad_models, ignore=shutil.ignore_patterns("*.json", "*.md", "*.py"))
        model = bad_models / "pitch" / "melisma_pitch_int8.tflite"
        model.write_bytes(model.read_bytes()[: len(model.read_bytes()) // 3])
        self.broken_v3 = build(d / "broken-3.0.0.mlb", "3.0.0", key, "--models", str(bad_models))


@pytest.fixture(scope="session")
def bundles(tmp_path_factory) -> Bundles:
    return Bundles(tmp_path_factory.mktemp("bundles"))


@pytest.fixture
def installed_v1(bundles, tmp_path) -> Path:
    """A scratch root with 1.0.0 installed (first install, trusting the test key)."""
    root = tmp_path / "root"
    run_update(*install_args(bundles.v1, root, "--trusted-keys", str(bundles.keys)), check=True)
    return root
