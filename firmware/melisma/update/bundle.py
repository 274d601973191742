r"""The firmware bundle file: format, Ed25519 keys, signing and verification.

A bundle is one file, covered byte for byte by its signature:

1. a short POSIX shell header (``sh BUNDLE install ...`` runs the updater that the bundle
   carries, with nothing but the system's Python 3), ending with the line ``#MELISMA-BUNDLE-DATA``;
2. the magic ``MLB1``;
3. a little-endian u32 length and the **manifest** (canonical JSON: version, target, Python
   version, SHA-256 of the header and of the payload, each file's SHA-256 and size);
4. a u32 length and the **signature block** (JSON: key id, ``ed25519``, the base64 signature of
   the manifest bytes); length 0 means unsigned;
5. the **payload**: a reproducible tar (sorted names, time 0, owner 0) of ``wheels/``, ``models/``,
   ``systemd/``, ``config/`` and the like, exactly ``payload_size`` bytes, then the end of the file.

:func:`verify_bundle` checks the signature against the trusted public keys, then the header's and
the payload's digests and every file's digest and size, without writing anything. A flipped byte
anywhere, a truncated or lengthened file, an unknown or missing signature is refused with a
message saying which.

Examples
--------
>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> priv, pub = keygen(d / "keys")
>>> out = write_bundle(d / "b.mlb", {"config/box.toml": b"[log]\\n"}, {"version": "1.2.3", "target": "host"},
...                    load_private_key(priv))
>>> verify_bundle(out, load_trusted_keys(d / "keys")).manifest["version"]
'1.2.3'
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import re
import struct
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import UpdateError

FORMAT = 1
MAGIC = b"MLB1"
DATA_MARKER = b"#MELISMA-BUNDLE-DATA\n"
#: The header must end within this many bytes of the start.
MAX_HEADER = 64 * 1024
MAX_MANIFEST = 4 * 1024 * 1024
MAX_SIGNATURE_BLOCK = 4096
PRIVATE_KEY_NAME = "signing.key"
PUBLIC_KEY_NAME = "signing.pub"
SAFE_PATH = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]*(/[A-Za-z0-9_][A-Za-z0-9._+-]*)*")

#: The bootstrap the shell header runs: find the payload, put the bundle's own melisma wheel (and
#: cryptography, when the system lacks it) on sys.path, hand over to ``melisma-update``.
BOOTSTRAP = r'''
import os, struct, sys, tarfile, tempfile, zipfile
path = sys.argv[1]
f = open(path, "rb")
head = f.read(65536)
pos = head.index(b"\n#MELISMA-BUNDLE-DATA\n") + 22 + 4
for _ in range(2):
    f.seek(pos)
    pos += 4 + struct.unpack("<I", f.read(4))[0]
f.seek(pos)
tmp = tempfile.mkdtemp(prefix="melisma-boot-")
try:
    import cryptography  # noqa: F401
    wanted = ("melisma-",)
except ImportError:
    wanted = ("melisma-", "cryptography-", "cffi-", "pycparser-")
with tarfile.open(fileobj=f, mode="r:") as tar:
    for m in tar.getmembers():
        base = m.name.rsplit("/", 1)[-1]
        if m.isfile() and m.name.startswith("wheels/") and base.startswith(wanted):
            zipfile.ZipFile(tar.extractfile(m)).extractall(tmp)
sys.path.insert(0, tmp)
from melisma.update.cli import main
args = sys.argv[2:]
if args and args[0] in ("install", "verify") and (len(args) == 1 or args[1].startswith("-")):
    args.insert(1, path)
sys.exit(main(args))
'''

HEADER = (
    b"#!/bin/sh\n"
    b"# Melisma firmware bundle (format 1): signed firmware for the Melisma box.\n"
    b"# Install or update a box with:  sudo sh THIS-FILE install [--trusted-keys DIR]\n"
    b"# Check it without changing anything:  sh THIS-FILE verify --trusted-keys DIR\n"
    b"# It needs only the system's Python 3 and downloads nothing.\n"
    b'exec "${PYTHON:-python3}" -c "$(sed -n \'/^#MELISMA-BOOT$/,/^#MELISMA-END$/{/^#MELISMA-/!p;/^#MELISMA-END$/q}\' "$0")" "$0" "$@"\n'  # noqa: E501 -- one shell line
    b"exit 1\n"
    b"#MELISMA-BOOT\n" + BOOTSTRAP.strip().encode() + b"\n#MELISMA-END\n" + DATA_MARKER
)


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


# ----------------------------------------------------------------------------------------------
# Keys


def _crypto():
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:  # pragma: no cover - cryptography comes with bumble
        raise UpdateError("the Python package 'cryptography' is missing; install it (pip install cryptography) "
                          "to sign or verify firmware bundles") from None
    return ed25519, serialization, InvalidSignature


def key_id(public_key) -> str:
    """First 16 hex digits of the SHA-256 of the raw 32-byte public key."""
    _, serialization, _ = _crypto()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def keygen(out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write a new Ed25519 key pair: ``signing.key`` (PKCS#8 PEM, mode 0600) and ``signing.pub``.

    Raises
    ------
    UpdateError
        When either file already exists (a key is never overwritten).
    """
    ed25519, serialization, _ = _crypto()
    out = Path(out_dir)
    priv_path, pub_path = out / PRIVATE_KEY_NAME, out / PUBLIC_KEY_NAME
    for p in (priv_path, pub_path):
        if p.exists():
            raise UpdateError(f"{p} already exists; keys are never overwritten: choose another --out folder "
                              f"(or move the old key away first)")
    out.mkdir(parents=True, exist_ok=True)
    key = ed25519.Ed25519PrivateKey.generate()
    priv = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    _atomic_write(priv_path, priv, mode=0o600)
    _atomic_write(pub_path, pub, mode=0o644)
    return priv_path, pub_path


def load_private_key(path: str | os.PathLike):
    """The Ed25519 private key in a PEM file made by :func:`keygen`."""
    ed25519, serialization, _ = _crypto()
    p = Path(path)
    try:
        key = serialization.load_pem_private_key(p.read_bytes(), password=None)
    except FileNotFoundError:
        raise UpdateError(f"signing key {p} does not exist; make one with `melisma-update keygen --out DIR`") from None
    except (ValueError, TypeError) as exc:
        raise UpdateError(f"{p} is not an unencrypted PEM private key ({exc}); use the signing.key written by "
                          f"`melisma-update keygen`") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise UpdateError(f"{p} holds a {type(key).__name__}, not an Ed25519 key; make one with "
                          f"`melisma-update keygen --out DIR`")
    return key


def load_public_key(path: str | os.PathLike):
    """The Ed25519 public key in a PEM file (``signing.pub``)."""
    ed25519, serialization, _ = _crypto()
    p = Path(path)
    try:
        key = serialization.load_pem_public_key(p.read_bytes())
    except (ValueError, TypeError, OSError) as exc:
        raise UpdateError(f"{p} is not a PEM public key ({exc}); use a signing.pub written by "
                          f"`melisma-update keygen`") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise UpdateError(f"{p} holds a {type(key).__name__}, not an Ed25519 public key")
    return key


def load_trusted_keys(directory: str | os.PathLike) -> dict[str, Any]:
    """Every ``*.pub`` in ``directory``, by key id."""
    d = Path(directory)
    if not d.is_dir():
        raise UpdateError(f"trusted-keys folder {d} does not exist; give --trusted-keys DIR holding the signing.pub "
                          f"of whoever signed the bundle")
    keys = {}
    for p in sorted(d.glob("*.pub")):
        k = load_public_key(p)
        keys[key_id(k)] = k
    return keys


# ----------------------------------------------------------------------------------------------
# Writing


def _tar_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            data = files[name]
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def make_manifest(files: dict[str, bytes], fields: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    """The manifest for ``files`` plus ``fields`` (version, target, ...), and the payload tar."""
    for name in files:
        if not SAFE_PATH.fullmatch(name) or ".." in name.split("/"):
            raise UpdateError(f"bundle path {name!r} is not allowed; use relative paths of letters, digits, . _ + -")
    payload = _tar_bytes(files)
    manifest = dict(fields)
    manifest.update({
        "format": FORMAT,
        "header_sha256": hashlib.sha256(HEADER).hexdigest(),
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "payload_size": len(payload),
        "unpacked_size": sum(len(v) for v in files.values()),
        "files": {name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
                  for name, data in sorted(files.items())},
    })
    return manifest, payload


def write_bundle(out: str | os.PathLike, files: dict[str, bytes], fields: dict[str, Any], private_key, *,
                 overwrite: bool = False) -> Path:
    """Write a signed bundle of ``files`` (relative path -> bytes) with manifest ``fields``.

    ``private_key`` None writes an unsigned bundle (which every install refuses; for tests).
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise UpdateError(f"{out} already exists; choose another -o FILE (or pass --force to replace it)")
    manifest, payload = make_manifest(files, fields)
    mbytes = _canonical(manifest)
    if private_key is None:
        sig = b""
    else:
        sig = _canonical({"algorithm": "ed25519", "key_id": key_id(private_key.public_key()),
                          "signature": base64.b64encode(private_key.sign(mbytes)).decode()})
    blob = HEADER + MAGIC + struct.pack("<I", len(mbytes)) + mbytes + struct.pack("<I", len(sig)) + sig + payload
    _atomic_write(out, blob, mode=0o644)
    return out


def _atomic_write(path: Path, data: bytes, *, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# ----------------------------------------------------------------------------------------------
# Reading and verifying


class _Section(io.RawIOBase):
    """A read-only window ``[start, start + size)`` of an open file."""

    def __init__(self, f: BinaryIO, start: int, size: int):
        self.f, self.start, self.size, self.pos = f, start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.size}[whence]
        self.pos = max(0, min(self.size, base + offset))
        return self.pos

    def readinto(self, b) -> int:
        n = min(len(b), self.size - self.pos)
        if n <= 0:
            return 0
        self.f.seek(self.start + self.pos)
        data = self.f.read(n)
        b[: len(data)] = data
        self.pos += len(data)
        return len(data)


@dataclass
class Bundle:
    """A verified bundle: its manifest, signer and where the payload lies in the file."""

    path: Path
    manifest: dict[str, Any]
    signer: str
    payload_offset: int

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def target(self) -> str:
        return str(self.manifest["target"])

    def open_payload(self) -> tarfile.TarFile:
        f = open(self.path, "rb")  # noqa: SIM115 -- closed with the tar file
        section = io.BufferedReader(_Section(f, self.payload_offset, int(self.manifest["payload_size"])))
        tar = tarfile.open(fileobj=section, mode="r:")  # noqa: SIM115 -- the caller closes it
        tar._melisma_file = f  # type: ignore[attr-defined]
        return tar

    def iter_files(self):
        """Yield ``(name, bytes)`` for each payload file, each checked against the manifest."""
        files = self.manifest["files"]
        seen = set()
        with contextlib.closing(self.open_payload()) as tar:
            try:
                for m in tar:
                    name = m.name
                    if not m.isfile() or name not in files or name in seen:
                        why = ("is not a regular file" if not m.isfile() else
                               "appears twice" if name in seen else "is not in the manifest")
                        raise UpdateError(f"{self.path}: payload member {name!r} {why}; the bundle was tampered "
                                          f"with, rebuild it with tools/build-bundle")
                    data = tar.extractfile(m).read()
                    want = files[name]
                    if len(data) != want["size"] or hashlib.sha256(data).hexdigest() != want["sha256"]:
                        raise UpdateError(f"{self.path}: {name} does not match its SHA-256 in the manifest; the "
                                          f"bundle is corrupt or was tampered with (copy it again)")
                    seen.add(name)
                    yield name, data
            except tarfile.TarError as exc:
                raise UpdateError(f"{self.path}: the payload is not a readable archive ({exc}); the bundle is "
                                  f"corrupt (copy it again)") from None
            finally:
                tar._melisma_file.close()
        missing = sorted(set(files) - seen)
        if missing:
            raise UpdateError(f"{self.path}: {len(missing)} file(s) of the manifest are missing from the payload "
                              f"(first: {missing[0]}); the bundle is incomplete (copy it again)")


def read_unverified(path: str | os.PathLike) -> tuple[bytes, dict[str, Any] | None, bytes, int, int]:
    """Split a bundle into (manifest bytes, signature block or None, header, payload offset, file size)."""
    p = Path(path)
    try:
        size = p.stat().st_size
        f = open(p, "rb")  # noqa: SIM115
    except FileNotFoundError:
        raise UpdateError(f"bundle {p} does not exist; give the path of a .mlb file made by tools/build-bundle") from None
    except OSError as exc:
        raise UpdateError(f"bundle {p} cannot be read ({exc.strerror})") from None
    with f:
        head = f.read(MAX_HEADER)
        end = head.find(DATA_MARKER)
        if end < 0:
            raise UpdateError(f"{p} is not a Melisma firmware bundle (no bundle marker in its first "
                              f"{MAX_HEADER // 1024} KiB); give a .mlb file made by tools/build-bundle")
        header_len = end + len(DATA_MARKER)
        header = head[:header_len]
        f.seek(header_len)

        def take(n: int, what: str) -> bytes:
            data = f.read(n)
            if len(data) != n:
                raise UpdateError(f"{p} is truncated: it ends inside the {what} ({size} bytes); copy the "
                                  f"whole bundle again")
            return data

        if take(4, "format magic") != MAGIC:
            raise UpdateError(f"{p}: unknown bundle format (expected {MAGIC.decode()} after the header); this "
                              f"updater reads format {FORMAT}, or the bundle was damaged")
        (mlen,) = struct.unpack("<I", take(4, "manifest length"))
        if mlen > MAX_MANIFEST:
            raise UpdateError(f"{p}: manifest length {mlen} is implausible; the bundle is corrupt (copy it again)")
        mbytes = take(mlen, "manifest")
        (slen,) = struct.unpack("<I", take(4, "signature length"))
        if slen > MAX_SIGNATURE_BLOCK:
            raise UpdateError(f"{p}: signature block length {slen} is implausible; the bundle is corrupt")
        sig = None
        if slen:
            try:
                sig = json.loads(take(slen, "signature"))
            except ValueError:
                raise UpdateError(f"{p}: the signature block is not readable; the bundle is corrupt or was "
                                  f"tampered with") from None
        return mbytes, sig, header, f.tell(), size


def verify_bundle(path: str | os.PathLike, trusted: dict[str, Any], *, check_files: bool = True) -> Bundle:
    """Check a bundle's signature, header, payload and (``check_files``) every file; write nothing.

    Parameters
    ----------
    path
        The bundle file.
    trusted
        Trusted public keys by key id (:func:`load_trusted_keys`).
    check_files
        Also read the payload and check each file's SHA-256 and size against the manifest.

    Raises
    ------
    UpdateError
        Naming what is wrong: not a bundle, truncated, unsigned, unknown key, bad signature,
        tampered header/payload/file.
    """
    _, _, invalid_signature = _crypto()
    p = Path(path)
    mbytes, sig, header, payload_offset, size = read_unverified(p)
    if sig is None:
        raise UpdateError(f"{p} is not signed; only bundles signed by a trusted key are installed "
                          f"(sign it: tools/build-bundle --key DIR/signing.key)")
    kid = str(sig.get("key_id", "?")) if isinstance(sig, dict) else "?"
    if kid not in trusted:
        have = ", ".join(sorted(trusted)) or "none"
        raise UpdateError(f"{p} is signed by key {kid}, which is not trusted here (trusted: {have}); "
                          f"install its signing.pub in the trusted-keys folder, or use a bundle signed by a "
                          f"trusted key")
    try:
        signature = base64.b64decode(str(sig.get("signature", "")), validate=True)
        trusted[kid].verify(signature, mbytes)
    except (invalid_signature, ValueError):
        raise UpdateError(f"{p}: the signature does not match the manifest (key {kid}); the bundle was "
                          f"tampered with or damaged; copy it again from its source") from None
    manifest = json.loads(mbytes)
    if manifest.get("format") != FORMAT:
        raise UpdateError(f"{p}: bundle format {manifest.get('format')!r}; this updater reads format {FORMAT}")
    if hashlib.sha256(header).hexdigest() != manifest["header_sha256"]:
        raise UpdateError(f"{p}: the shell header was changed after signing; the bundle was tampered with")
    expected_end = payload_offset + int(manifest["payload_size"])
    if size < expected_end:
        raise UpdateError(f"{p} is truncated: {size} bytes, the manifest says {expected_end}; copy the whole "
                          f"bundle again")
    if size > expected_end:
        raise UpdateError(f"{p} has {size - expected_end} bytes after the end of its payload; it was tampered "
                          f"with or two files were joined; copy it again")
    h = hashlib.sha256()
    with open(p, "rb") as f:
        f.seek(payload_offset)
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest() != manifest["payload_sha256"]:
        raise UpdateError(f"{p}: the payload does not match its SHA-256 in the manifest; the bundle is corrupt "
                          f"or was tampered with (copy it again)")
    bundle = Bundle(p, manifest, kid, payload_offset)
    if check_files:
        for _ in bundle.iter_files():
            pass
    return bundle


def manifest_of(path: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a bundle, unverified (for showing what a file claims to be)."""
    mbytes, *_ = read_unverified(path)
    return json.loads(mbytes)


__all__ = [
    "HEADER",
    "Bundle",
    "key_id",
    "keygen",
    "load_private_key",
    "load_public_key",
    "load_trusted_keys",
    "make_manifest",
    "manifest_of",
    "verify_bundle",
    "write_bundle",
]
