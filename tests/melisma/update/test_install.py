"""Install, update, roll back, refuse, fail a self-test, fail a health check: on a scratch root."""

from __future__ import annotations

import os
import struct
import subprocess
import sys

from melisma.update import bundle as b

from tests.melisma.update.conftest import install_args, run_update, slot_version, snapshot, status


def test_install_v1_update_to_v2_and_roll_back(bundles, installed_v1):
    root = installed_v1
    st = status(root)
    assert (st["active_slot"], st["active_version"], st["previous_slot"], st["previous_version"]) == ("a", "1.0.0", None, None)
    current = root / "opt" / "melisma" / "current"
    assert os.readlink(current) == "slots/a"
    assert slot_version(current) == "1.0.0"
    # the first install set the box up: config, trusted key, units, data folder
    assert (root / "etc" / "melisma" / "box.toml").read_text().startswith("# Melisma box configuration")
    assert sorted(p.name for p in (root / "etc" / "melisma" / "trusted-keys").iterdir()) == ["signing.pub"]
    assert (root / "etc" / "systemd" / "system" / "melisma-device.service").is_file()
    data = root / "var" / "lib" / "melisma"
    (data / "library" / "takes").mkdir(parents=True)
    (data / "library" / "takes" / "take.m4a").write_bytes(b"my take")
    (data / "bonds.json").write_text("{}")
    data_before = snapshot(data)
    config_before = (root / "etc" / "melisma" / "box.toml").read_bytes()

    run_update(*install_args(bundles.v2, root), check=True)
    st = status(root)
    assert (st["active_slot"], st["active_version"], st["previous_slot"], st["previous_version"]) == ("b", "2.0.0", "a", "1.0.0")
    assert os.readlink(current) == "slots/b"
    assert slot_version(current) == "2.0.0"
    assert slot_version(root / "opt" / "melisma" / "slots" / "a") == "1.0.0"
    assert st["last_update"]["outcome"] == "installed"
    assert snapshot(data) == data_before  # data is never touched
    assert (root / "etc" / "melisma" / "box.toml").read_bytes() == config_before

    proc = run_update("rollback", "--root", str(root), check=True)
    assert "slot a" in proc.stdout
    st = status(root)
    assert (st["active_slot"], st["active_version"], st["previous_slot"], st["previous_version"]) == ("a", "1.0.0", "b", "2.0.0")
    assert slot_version(current) == "1.0.0"
    assert st["last_update"]["action"] == "rollback"
    assert snapshot(data) == data_before


def _refused(root, bundle_path, *extra, expect):
    before = snapshot(root)
    proc = run_update(*install_args(bundle_path, root, *extra))
    assert proc.returncode == 12, (proc.stdout, proc.stderr)
    assert expect in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert snapshot(root) == before, "a refused bundle changed something"
    return proc.stderr


def test_refusals_change_nothing(bundles, installed_v1, tmp_path):
    root = installed_v1
    run_update(*install_args(bundles.v2, root), check=True)
    # downgrade, wrong key, wrong target
    _refused(root, bundles.v1, expect="not newer than the installed 2.0.0; pass --allow-downgrade")
    _refused(root, bundles.other_key_v3, expect="which is not trusted here")
    _refused(root, bundles.aarch64_v3, expect="is for linux-aarch64, this box is linux-")
    # truncated at several places: inside the header, the manifest, the payload, the last byte
    data = bundles.v3.read_bytes()
    manifest_end = data.index(b.DATA_MARKER) + len(b.DATA_MARKER) + 8 + 100
    for i, cut in enumerate((200, manifest_end, len(data) // 2, len(data) - 1)):
        bad = tmp_path / f"truncated-{i}.mlb"
        bad.write_bytes(data[:cut])
        msg = _refused(root, bad, expect="")
        assert any(w in msg for w in ("truncated", "not a Melisma firmware bundle")), msg
    # unsigned: the same manifest and payload with an empty signature block
    mbytes, sig, header, payload_offset, _ = b.read_unverified(bundles.v3)
    unsigned = tmp_path / "unsigned.mlb"
    unsigned.write_bytes(header + b.MAGIC + struct.pack("<I", len(mbytes)) + mbytes + struct.pack("<I", 0)
                         + data[payload_offset:])
    _refused(root, unsigned, expect="is not signed")
    # re-signed by an unknown key that claims the trusted key's id
    other = b.load_private_key(bundles.other_keys / "signing.key")
    import base64
    import json

    forged_sig = json.dumps({"algorithm": "ed25519", "key_id": sig["key_id"],
                             "signature": base64.b64encode(other.sign(mbytes)).decode()}).encode()
    forged = tmp_path / "forged.mlb"
    forged.write_bytes(header + b.MAGIC + struct.pack("<I", len(mbytes)) + mbytes + struct.pack("<I", len(forged_sig))
                       + forged_sig + data[payload_offset:])
    _refused(root, forged, expect="the signature does not match")
    # a tampered byte (one via the command, the rest below through the same verify function)
    tampered = tmp_path / "tampered.mlb"
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x01
    tampered.write_bytes(bytes(flipped))
    _refused(root, tampered, expect="does not match")
    st = status(root)
    assert (st["active_slot"], st["active_version"], st["previous_version"]) == ("b", "2.0.0", "1.0.0")


def test_a_tampered_byte_anywhere_is_refused(bundles):
    """Flip one byte in every region (header, magic, lengths, manifest, signature, each payload
    file and the tar headers between them, the last byte) and at 40 random places: all refused."""
    import random

    data = bundles.v1.read_bytes()
    trusted = b.load_trusted_keys(bundles.keys)
    assert b.verify_bundle(bundles.v1, trusted).version == "1.0.0"
    mbytes, _sig, header, payload_offset, _ = b.read_unverified(bundles.v1)
    h = len(header)
    positions = {0, 10, h - 5, h - 1, h, h + 3, h + 4, h + 7, h + 8, h + 8 + len(mbytes) // 2, h + 8 + len(mbytes) - 1,
                 h + 8 + len(mbytes), payload_offset - 10, payload_offset, payload_offset + 200, payload_offset + 511,
                 payload_offset + 512, len(data) - 1, len(data) - 600}
    rng = random.Random(18)
    positions |= {rng.randrange(len(data)) for _ in range(40)}
    tmp = bundles.dir / "tamper.mlb"
    for pos in sorted(positions):
        flipped = bytearray(data)
        flipped[pos] ^= 0x40
        tmp.write_bytes(bytes(flipped))
        try:
            b.verify_bundle(tmp, trusted)
        except b.UpdateError:
            continue
        raise AssertionError(f"a flipped byte at {pos} of {len(data)} was not noticed")
    # lengthened: a byte appended
    tmp.write_bytes(data + b"\0")
    try:
        b.verify_bundle(tmp, trusted)
    except b.UpdateError as exc:
        assert "after the end of its payload" in str(exc)
    else:
        raise AssertionError("an appended byte was not noticed")


def test_failing_selftest_is_never_switched_to(bundles, installed_v1):
    root = installed_v1
    before = os.readlink(root / "opt" / "melisma" / "current")
    proc = run_update(*install_args(bundles.broken_v3, root))
    assert proc.returncode == 12
    assert "self-test" in proc.stderr and "models" in proc.stderr and "nothing was switched" in proc.stderr
    assert os.readlink(root / "opt" / "melisma" / "current") == before
    st = status(root)
    assert (st["active_slot"], st["active_version"]) == ("a", "1.0.0")
    assert st["previous_slot"] is None  # slot b holds the failed attempt, which never counts
    assert st["last_update"]["outcome"] == "selftest-failed"
    assert slot_version(root / "opt" / "melisma" / "current") == "1.0.0"
    # and the box can still be updated afterwards
    run_update(*install_args(bundles.v2, root), check=True)
    assert status(root)["active_version"] == "2.0.0"


def test_failing_health_check_rolls_back(bundles, installed_v1):
    root = installed_v1
    # the health check after the switch must pass within its time limit; 0.2 s is too short for
    # `current/bin/melisma selftest`, so the switched-to slot fails it and the box rolls back
    proc = run_update(*install_args(bundles.v2, root, "--health-timeout", "0.2"))
    assert proc.returncode == 12, proc.stderr
    assert "failed its health check" in proc.stderr and "rolled back to slot a" in proc.stderr
    st = status(root)
    assert (st["active_slot"], st["active_version"]) == ("a", "1.0.0")
    assert st["previous_slot"] == "b" and st["previous_version"] == "2.0.0"
    assert st["last_update"]["outcome"] == "rolled-back"
    assert "health check failed" in st["last_update"]["reason"]
    assert "rolled back to slot a" in (root / "opt" / "melisma" / "update.log").read_text()
    assert slot_version(root / "opt" / "melisma" / "current") == "1.0.0"
    human = run_update("status", "--root", str(root), check=True).stdout
    assert "rolled-back" in human and "health check failed" in human


def test_bundle_runs_its_own_updater_from_the_shell_header(bundles, tmp_path):
    """`sh BUNDLE verify|install ...` needs only a Python 3: the bundle carries its updater."""
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.run(["sh", str(bundles.v2), "verify", "--trusted-keys", str(bundles.keys)],
                          capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "good signature" in proc.stdout and "melisma 2.0.0" in proc.stdout
    proc = subprocess.run(["sh", str(bundles.other_key_v3), "verify", "--trusted-keys", str(bundles.keys)],
                          capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert proc.returncode == 12 and "not trusted" in proc.stderr
    root = tmp_path / "root"
    proc = subprocess.run(["sh", str(bundles.v2), "install", "--root", str(root), "--trusted-keys", str(bundles.keys),
                           "--dev-site-packages", install_args(bundles.v2, root)[-1]],
                          capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert slot_version(root / "opt" / "melisma" / "current") == "2.0.0"


def test_reproducible_manifest(bundles, tmp_path):
    from tests.melisma.update.conftest import build

    again = build(tmp_path / "again.mlb", "1.0.0", bundles.keys / "signing.key")
    assert b.manifest_of(again) == b.manifest_of(bundles.v1)
    assert again.read_bytes() == bundles.v1.read_bytes()  # Ed25519 signatures are deterministic too
    m = b.manifest_of(bundles.v1)
    assert m["version"] == "1.0.0" and m["python"] == f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert {"models/pitch/melisma_pitch_int8.tflite", "config/box.toml", "systemd/melisma-device.service"} <= set(m["files"])
    assert all(len(f["sha256"]) == 64 for f in m["files"].values())


def test_keygen_never_overwrites(bundles):
    proc = run_update("keygen", "--out", str(bundles.keys))
    assert proc.returncode == 12 and "already exists" in proc.stderr
    assert (bundles.keys / "signing.key").stat().st_mode & 0o077 == 0
