"""The updater SIGKILLed at every step of `install` (and at random times) always leaves a `current`
slot that runs and a `status` that tells the truth."""

from __future__ import annotations

import os
import random
import subprocess
import time

from melisma.update.install import INSTALL_STEPS, KILL_ENV

from tests.melisma.update.conftest import UPDATE, install_args, run_update, slot_version, status


def _check_truthful(root):
    st = status(root)
    base = root / "opt" / "melisma"
    link = os.readlink(base / "current")
    assert link in ("slots/a", "slots/b"), link
    assert st["active_slot"] == link.split("/")[1]
    assert slot_version(base / "current") == st["active_version"]
    other = "b" if st["active_slot"] == "a" else "a"
    if st["previous_slot"] is None:
        assert not (base / "slots" / other / "slot.json").exists()
    else:
        assert st["previous_slot"] == other
        assert slot_version(base / "slots" / other) == st["previous_version"]
    return st


def test_sigkill_at_every_install_step(bundles, installed_v1):
    root = installed_v1
    run_update(*install_args(bundles.v2, root), check=True)  # both slots full: clearing the old slot is exercised
    versions = {"2.0.0": bundles.v3, "3.0.0": bundles.v2}
    reached = []
    for step in INSTALL_STEPS:
        if step == "first-setup":
            continue  # only on a fresh root (below)
        before = status(root)
        bundle = versions[before["active_version"]]
        env = dict(os.environ, **{KILL_ENV: step})
        proc = run_update(*install_args(bundle, root, "--allow-downgrade"), env=env)
        st = _check_truthful(root)
        if proc.returncode == -9:
            reached.append(step)
            if st["in_progress"] is not None:
                assert st["in_progress"]["running"] is False
        else:
            assert proc.returncode == 0, proc.stderr
    # every step of an update was reached and killed (clearing the old slot included)
    assert reached == [s for s in INSTALL_STEPS if s != "first-setup"], reached
    # a switch left waiting by the kill is finished by the boot-time health check
    run_update("health", "--root", str(root), check=True)
    st = _check_truthful(root)
    assert st["pending_health_check"] is None
    # and the box still updates normally
    bundle = versions[st["active_version"]]
    run_update(*install_args(bundle, root, "--allow-downgrade"), check=True)
    _check_truthful(root)


def test_sigkill_at_random_times(bundles, installed_v1):
    root = installed_v1
    rng = random.Random(1818)
    versions = {"1.0.0": bundles.v2, "2.0.0": bundles.v3, "3.0.0": bundles.v2}
    for _ in range(4):
        bundle = versions[status(root)["active_version"]]
        proc = subprocess.Popen([*UPDATE, *install_args(bundle, root, "--allow-downgrade")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 6.0))
        proc.kill()
        proc.wait()
        _check_truthful(root)


def test_sigkill_during_first_install_then_rerun(bundles, tmp_path):
    root = tmp_path / "fresh"
    for step in ("first-setup", "unpacked", "venv"):
        env = dict(os.environ, **{KILL_ENV: step})
        proc = run_update(*install_args(bundles.v1, root, "--trusted-keys", str(bundles.keys)), env=env)
        assert proc.returncode == -9
        st = status(root)
        assert st["installed"] is False and st["active_slot"] is None  # nothing claims to be installed
        assert not (root / "opt" / "melisma" / "current").exists()
    run_update(*install_args(bundles.v1, root, "--trusted-keys", str(bundles.keys)), check=True)
    st = _check_truthful(root)
    assert st["active_version"] == "1.0.0"
