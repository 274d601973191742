"""A/B slots under ``ROOT/opt/melisma``: install, status, rollback and the health check.

Layout (every path below ``root``, ``/`` on a box, a scratch folder in tests)::

    opt/melisma/slots/a/         a complete environment: a venv built offline from the bundle's wheels,
                                 share/melisma/{models,systemd,manifest.json,box.toml.default}, slot.json
    opt/melisma/slots/b/         the other slot
    opt/melisma/current -> slots/a   the active slot (a relative symlink, replaced by one rename)
    opt/melisma/state.json       the last update's outcome, a switch waiting for its health check, a step in progress
    opt/melisma/update.log       what the updater did, and why it rolled back
    etc/melisma/box.toml         configuration (first install only; never overwritten)
    etc/melisma/trusted-keys/    public keys trusted to sign bundles (first install)
    etc/systemd/system/          the units (first install)
    var/lib/melisma/             data: takes, mixes, bonds, calibration — never touched by an update

A slot counts only once its ``slot.json`` exists; it is written (atomically) after the venv is
built and the slot's own self-test passed, and removed first when the slot is cleared, so a slot
killed half-way through is never taken for a complete one. ``current`` only ever points at a
complete slot. ``MELISMA_UPDATE_KILL_AT=STEP`` makes the updater SIGKILL itself when it reaches
STEP (one of :data:`INSTALL_STEPS`), for the tests that kill it at every step.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UpdateError
from .bundle import Bundle, load_trusted_keys, verify_bundle

logger = logging.getLogger("melisma.update")

SLOTS = ("a", "b")
KILL_ENV = "MELISMA_UPDATE_KILL_AT"
#: Checkpoints of ``install``, in order; the fault hook can kill the updater at each.
INSTALL_STEPS = ("verified", "space-checked", "locked", "first-setup", "clearing", "cleared", "unpacking",
                 "unpacked", "venv", "installed", "selftested", "marked", "pending", "switched", "restarted",
                 "health-checked", "confirmed")
SERVICE_UNIT = "melisma-device.service"
#: Share of the wheels' size a venv takes once unpacked (measured: ~2.3x; rounded up), plus a margin.
INSTALLED_SIZE_FACTOR = 3.0
SPACE_MARGIN = 64 * 1024 * 1024
VERSION_PATTERN = re.compile(r"(\d+)\.(\d+)\.(\d+)")


def parse_version(text: str) -> tuple[int, int, int]:
    """``"1.2.3"`` -> ``(1, 2, 3)``; anything else is refused."""
    m = VERSION_PATTERN.fullmatch(str(text))
    if not m:
        raise UpdateError(f"version {text!r} is not X.Y.Z (e.g. 0.2.0)")
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def host_target() -> str:
    """The bundle target this machine runs: ``linux-aarch64`` on a 64-bit Pi, ``linux-x86_64`` here."""
    machine = platform.machine().lower()
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    return f"{sys.platform if sys.platform != 'linux' else 'linux'}-{machine}"


def _kill_point(step: str) -> None:
    if os.environ.get(KILL_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temporary file, fsync, rename, fsync the folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):  # a zombie (killed, not yet reaped) is not running
        if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
            return False
    return True


class Box:
    """The updater's view of one root: paths, slots, the ``current`` link and the state file."""

    def __init__(self, root: str | os.PathLike = "/"):
        self.root = Path(root).resolve()
        self.base = self.root / "opt" / "melisma"
        self.slots_dir = self.base / "slots"
        self.current = self.base / "current"
        self.state_path = self.base / "state.json"
        self.log_path = self.base / "update.log"
        self.lock_path = self.base / ".update.lock"
        self.etc = self.root / "etc" / "melisma"
        self.trusted_dir = self.etc / "trusted-keys"
        self.config_path = self.etc / "box.toml"
        self.units_dir = self.root / "etc" / "systemd" / "system"
        self.data_dir = self.root / "var" / "lib" / "melisma"

    @property
    def is_live(self) -> bool:
        """True for the real system root (then users, systemd and BlueZ are handled too)."""
        return self.root == Path("/")

    # -- slots ---------------------------------------------------------------------------------

    def slot_path(self, slot: str) -> Path:
        return self.slots_dir / slot

    def slot_info(self, slot: str) -> dict[str, Any] | None:
        """The slot's ``slot.json`` when the slot is complete, else None."""
        info = _read_json(self.slot_path(slot) / "slot.json")
        return info if isinstance(info, dict) and info.get("complete") else None

    def active_slot(self) -> str | None:
        try:
            target = os.readlink(self.current)
        except OSError:
            return None
        name = Path(target).name
        return name if name in SLOTS else None

    def other(self, slot: str | None) -> str:
        return "b" if slot == "a" else "a"

    # -- state and log --------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        s = _read_json(self.state_path)
        return s if isinstance(s, dict) else {}

    def update_state(self, **changes: Any) -> dict[str, Any]:
        s = self.state()
        s.update(changes)
        write_json(self.state_path, s)
        return s

    def log(self, message: str, *, level: int = logging.INFO) -> None:
        logger.log(level, message)
        with contextlib.suppress(OSError):
            self.base.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "a") as f:
                f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {logging.getLevelName(level)} {message}\n")

    # -- the link -------------------------------------------------------------------------------

    def switch_to(self, slot: str) -> None:
        """Point ``current`` at ``slot`` atomically: a new link renamed over the old one, folder fsync'd."""
        if self.slot_info(slot) is None:
            raise UpdateError(f"slot {slot} is not a complete install; refusing to switch to it")
        tmp = self.base / f".current.{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(f"slots/{slot}", tmp)
        os.replace(tmp, self.current)
        _fsync_dir(self.base)


# ----------------------------------------------------------------------------------------------
# Status


def status(root: str | os.PathLike = "/") -> dict[str, Any]:
    """What is installed, from the disk itself (the link and the slots), plus the last outcome."""
    box = Box(root)
    active = box.active_slot()
    active_info = box.slot_info(active) if active else None
    prev = box.other(active) if active else None
    prev_info = box.slot_info(prev) if prev else None
    state = box.state()
    in_progress = state.get("in_progress")
    if isinstance(in_progress, dict) and not _pid_alive(in_progress.get("pid")):
        in_progress = dict(in_progress, running=False)
    elif isinstance(in_progress, dict):
        in_progress = dict(in_progress, running=True)
    pending = state.get("pending")
    return {
        "root": str(box.root),
        "installed": active_info is not None,
        "active_slot": active if active_info else None,
        "active_version": active_info.get("version") if active_info else None,
        "previous_slot": prev if prev_info else None,
        "previous_version": prev_info.get("version") if prev_info else None,
        "slots": {s: box.slot_info(s) for s in SLOTS},
        "pending_health_check": pending if isinstance(pending, dict) else None,
        "in_progress": in_progress if isinstance(in_progress, dict) else None,
        "last_update": state.get("last"),
    }


# ----------------------------------------------------------------------------------------------
# Install


@dataclass
class InstallOptions:
    """What ``melisma-update install`` was told (see its --help)."""

    trusted_keys: Path | None = None
    allow_downgrade: bool = False
    python: str | None = None
    dev_site_packages: Path | None = None
    selftest_timeout_s: float = 300.0
    health_timeout_s: float = 90.0
    restart: bool = True
    progress: Callable[[str, float], None] | None = None


def _base_python() -> str:
    """The interpreter new slots are built with: this one's base (not a venv inside a venv)."""
    base = getattr(sys, "_base_executable", None) or sys.executable
    return base if base and Path(base).exists() else sys.executable


def _run(cmd: list[str], *, timeout: float, env: dict[str, str] | None = None, what: str) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise UpdateError(f"{what} did not finish within {timeout:.0f} s") from None
    except OSError as exc:
        raise UpdateError(f"{what} could not start ({exc.strerror}: {cmd[0]})") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise UpdateError(f"{what} failed (exit {proc.returncode}): {' | '.join(tail) or 'no output'}")
    return proc.stdout


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a slot's programs: no PYTHONPATH, pip settings or model overrides leak in."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "PIP_", "MELISMA_MODELS", "VIRTUAL_ENV"))}
    env["PIP_CONFIG_FILE"] = os.devnull
    env.setdefault("MPLCONFIGDIR", tempfile.gettempdir())
    env.update(extra or {})
    return env


def _free_bytes(path: Path) -> int:
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def _tree_size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def _trusted_for(box: Box, options: InstallOptions) -> dict[str, Any]:
    if options.trusted_keys is not None:
        keys = load_trusted_keys(options.trusted_keys)
        if not keys:
            raise UpdateError(f"{options.trusted_keys} holds no *.pub key; put the signing.pub of the bundle's "
                              f"signer there")
        return keys
    if not box.trusted_dir.is_dir():
        raise UpdateError(f"nothing is installed in {box.root} yet, so no key is trusted; give --trusted-keys DIR "
                          f"with the signing.pub of whoever signed the bundle")
    return load_trusted_keys(box.trusted_dir)


def check_policy(box: Box, bundle: Bundle, options: InstallOptions, python: str) -> None:
    """Refuse another target, another Python, a downgrade (unless allowed), external deps without a site."""
    m = bundle.manifest
    if m.get("target") != host_target():
        raise UpdateError(f"{bundle.path} is for {m.get('target')}, this box is {host_target()}; build a bundle "
                          f"with tools/build-bundle --target {host_target() if host_target() == 'linux-aarch64' else 'host'}")
    if m.get("name") != "melisma":
        raise UpdateError(f"{bundle.path} is a bundle of {m.get('name')!r}, not of melisma")
    want_py = str(m.get("python"))
    have_py = _run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], timeout=30,
                   what=f"{python} --version").strip()
    if want_py != have_py:
        raise UpdateError(f"{bundle.path} holds wheels for Python {want_py}, this box's Python ({python}) is "
                          f"{have_py}; build the bundle for Python {have_py}")
    new = parse_version(m["version"])
    active = box.active_slot()
    info = box.slot_info(active) if active else None
    if info and not options.allow_downgrade and new <= parse_version(info["version"]):
        raise UpdateError(f"{bundle.path} is version {m['version']}, not newer than the installed "
                          f"{info['version']}; pass --allow-downgrade to install it anyway")
    if m.get("dependencies") == "external" and options.dev_site_packages is None:
        raise UpdateError(f"{bundle.path} is a test bundle without its dependencies (built with --deps external); "
                          f"a box needs a full bundle (tools/build-bundle without --deps external)")


def check_space(box: Box, bundle: Bundle, target_slot: str) -> None:
    """Enough free space for the unpacked slot, counting the inactive slot's space as reclaimable."""
    need = int(bundle.manifest["unpacked_size"] * INSTALLED_SIZE_FACTOR) + SPACE_MARGIN
    reclaim = _tree_size(box.slot_path(target_slot)) if box.slot_path(target_slot).exists() else 0
    free = _free_bytes(box.base)
    if free + reclaim < need:
        raise UpdateError(f"not enough free space under {box.base}: the update needs about {need // 2**20} MiB, "
                          f"{(free + reclaim) // 2**20} MiB are free (counting the old slot {target_slot}); "
                          f"free some space (old mixes in {box.data_dir}) and try again")


class _Lock:
    def __init__(self, box: Box):
        self.box = box
        self.fd: int | None = None

    def __enter__(self) -> _Lock:
        self.box.base.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.box.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            self.fd = None
            owner = (self.box.state().get("in_progress") or {}).get("pid", "?")
            raise UpdateError(f"another melisma-update is working on {self.box.root} (pid {owner}); wait for it "
                              f"to finish") from None
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)


def _clear_slot(box: Box, slot: str) -> None:
    """Remove a slot: first its slot.json (so it no longer counts), then the rest."""
    path = box.slot_path(slot)
    if box.active_slot() == slot:  # never: the active slot is the one that runs
        raise UpdateError(f"refusing to clear slot {slot}: it is the active slot")
    with contextlib.suppress(FileNotFoundError):
        (path / "slot.json").unlink()
        _fsync_dir(path)
    if path.exists():
        trash = box.slots_dir / f".trash-{slot}-{os.getpid()}"
        os.replace(path, trash)
        _fsync_dir(box.slots_dir)
        _kill_point("clearing")
        shutil.rmtree(trash, ignore_errors=True)
    for old in box.slots_dir.glob(".trash-*"):
        shutil.rmtree(old, ignore_errors=True)


def _unpack(box: Box, bundle: Bundle, slot_dir: Path) -> None:
    """Write the bundle's files into the slot (wheels to a scratch folder inside it)."""
    share = slot_dir / "share" / "melisma"
    files = bundle.manifest["files"]
    for n, (name, data) in enumerate(bundle.iter_files(), start=1):
        top, _, rest = name.partition("/")
        dest = {"wheels": slot_dir / "wheels", "models": share / "models", "systemd": share / "systemd",
                "config": share / "config"}.get(top, share / top) / rest
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(dest, "wb") as f:
            f.write(data)
        if n == max(1, len(files) // 2):
            _kill_point("unpacking")
    (share / "manifest.json").write_text(json.dumps(bundle.manifest, indent=2, sort_keys=True))


def _build_venv(box: Box, bundle: Bundle, slot_dir: Path, python: str, options: InstallOptions) -> None:
    _run([python, "-m", "venv", "--without-pip", str(slot_dir)], timeout=300, env=clean_env(),
         what="creating the slot's virtual environment")
    wheels = slot_dir / "wheels"
    if options.dev_site_packages is not None:
        site = next((slot_dir / "lib").glob("python*/site-packages"))
        (site / "_melisma_dev_site.pth").write_text(str(Path(options.dev_site_packages).resolve()) + "\n")
    pip_wheels = sorted(wheels.glob("pip-*.whl"))
    if pip_wheels:
        pip = [str(slot_dir / "bin" / "python"), str(pip_wheels[-1] / "pip")]
    else:  # a test bundle without a pip wheel: the updater's own pip drives the slot's interpreter
        pip = [sys.executable, "-m", "pip", "--python", str(slot_dir / "bin" / "python")]
    reqs = [f"melisma=={bundle.version}"]
    cmd = [*pip, "install", "--isolated", "--no-index", "--find-links", str(wheels), "--no-cache-dir",
           "--disable-pip-version-check", "--no-warn-script-location", "--quiet"]
    if bundle.manifest.get("dependencies") == "external":
        cmd.append("--no-deps")
    _run(cmd + reqs, timeout=1800, env=clean_env(), what="installing the bundle's wheels into the slot")
    shutil.rmtree(wheels, ignore_errors=True)  # installed; the wheels would only take SD-card space


def _check_slot_files(bundle: Bundle, slot_dir: Path) -> None:
    """Models, units and default config on disk match the manifest (after unpacking, before the switch)."""
    import hashlib

    share = slot_dir / "share" / "melisma"
    for name, want in bundle.manifest["files"].items():
        top, _, rest = name.partition("/")
        if top == "wheels":
            continue
        path = {"models": share / "models", "systemd": share / "systemd", "config": share / "config"}.get(
            top, share / top) / rest
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            digest = None
        if digest != want["sha256"]:
            raise UpdateError(f"{path} does not match the bundle after unpacking; the storage may be failing")


def run_selftest(slot_dir: Path, timeout_s: float) -> str:
    """Run ``SLOT/bin/melisma selftest``; return its summary line or raise UpdateError."""
    exe = slot_dir / "bin" / "melisma"
    out = _run([str(exe), "selftest"], timeout=timeout_s, env=clean_env(),
               what=f"the self-test of {slot_dir}")
    return out.strip().splitlines()[-1] if out.strip() else "passed"


def _first_setup(box: Box, bundle: Bundle, options: InstallOptions) -> None:
    """A fresh root: folders, trusted keys, default config, units, data folder (and on a live box the user)."""
    box.slots_dir.mkdir(parents=True, exist_ok=True)
    box.data_dir.mkdir(parents=True, exist_ok=True)
    if options.trusted_keys is not None:
        box.trusted_dir.mkdir(parents=True, exist_ok=True)
        for pub in sorted(Path(options.trusted_keys).glob("*.pub")):
            dest = box.trusted_dir / pub.name
            if not dest.exists():
                shutil.copyfile(pub, dest)
    files = dict(bundle.iter_files()) if not box.config_path.exists() or not box.units_dir.exists() else {}
    if not box.config_path.exists() and "config/box.toml" in files:
        box.etc.mkdir(parents=True, exist_ok=True)
        box.config_path.write_bytes(files["config/box.toml"])
    box.units_dir.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        if name.startswith("systemd/"):
            dest = box.units_dir / name.split("/", 1)[1]
            if not dest.exists():
                dest.write_bytes(data)
    if box.is_live:
        _live_first_setup(box)
    box.log(f"first install in {box.root}: folders, trusted keys, {box.config_path}, units")


def _live_first_setup(box: Box) -> None:  # pragma: no cover - needs a real Raspberry Pi OS as root
    """The system user, data ownership, BlueZ off the radio, units enabled."""
    if subprocess.run(["id", "-u", "melisma"], capture_output=True).returncode != 0:
        _run(["useradd", "--system", "--home-dir", str(box.data_dir), "--no-create-home",
              "--shell", "/usr/sbin/nologin", "--groups", "audio,dialout", "melisma"], timeout=60,
             what="creating the melisma system user")
    _run(["chown", "-R", "melisma:melisma", str(box.data_dir)], timeout=60, what="handing the data folder over")
    # the box drives the radio itself (Bumble on a raw HCI socket): BlueZ must let go of hci0
    subprocess.run(["systemctl", "disable", "--now", "bluetooth.service"], capture_output=True)
    subprocess.run(["systemctl", "daemon-reload"], capture_output=True)
    subprocess.run(["systemctl", "enable", SERVICE_UNIT, "melisma-health.service", "melisma-update.path"],
                   capture_output=True)


def restart_service(box: Box) -> str:
    """Restart the box service when this root is a live system running systemd; say what was done."""
    if box.is_live and Path("/run/systemd/system").exists():  # pragma: no cover - needs systemd as PID 1
        _run(["systemctl", "restart", SERVICE_UNIT], timeout=120, what=f"systemctl restart {SERVICE_UNIT}")
        return f"restarted {SERVICE_UNIT}"
    return "no systemd runs this root: service not restarted"


def health_check(box: Box, slot: str, version: str, timeout_s: float) -> None:
    """The switched-to slot must prove itself within ``timeout_s``, else UpdateError (then: roll back).

    Checks: ``current`` points at ``slot``; ``current/bin/melisma --version`` prints ``version``;
    ``current/bin/melisma selftest`` passes (models, a short mix, BLE on a virtual link); on a live
    box the service is active and its heartbeat (``/var/lib/melisma/health.json``, written by
    ``melisma-device`` once it advertises) names the new version.
    """
    deadline = time.monotonic() + timeout_s

    def left() -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise UpdateError(f"the health check did not pass within {timeout_s:g} s")
        return remaining

    if box.active_slot() != slot:
        raise UpdateError(f"current points at {box.active_slot()}, expected slot {slot}")
    cur = box.current
    out = _run([str(cur / "bin" / "melisma"), "--version"], timeout=left(), env=clean_env(),
               what="current/bin/melisma --version").strip()
    if out.split()[-1:] != [version]:
        raise UpdateError(f"current/bin/melisma --version printed {out!r}, expected {version}")
    try:
        _run([str(cur / "bin" / "melisma"), "selftest"], timeout=left(), env=clean_env(),
             what="the self-test through current")
    except UpdateError:
        if time.monotonic() >= deadline:
            raise UpdateError(f"the health check did not pass within {timeout_s:g} s") from None
        raise
    if box.is_live and Path("/run/systemd/system").exists():  # pragma: no cover - needs systemd as PID 1
        since = time.time() - timeout_s
        while True:
            active = subprocess.run(["systemctl", "is-active", SERVICE_UNIT], capture_output=True, text=True)
            beat = _read_json(box.data_dir / "health.json") or {}
            if (active.stdout.strip() == "active" and beat.get("version") == version and beat.get("advertising")
                    and float(beat.get("time", 0)) >= since):
                return
            if left() < 1:
                raise UpdateError(f"{SERVICE_UNIT} is {active.stdout.strip() or 'not active'} and its heartbeat "
                                  f"says {beat or 'nothing'}; expected version {version} advertising")
            time.sleep(1)


def install(bundle_path: str | os.PathLike, root: str | os.PathLike = "/",
            options: InstallOptions | None = None) -> dict[str, Any]:
    """Verify a bundle, install it into the inactive slot, self-test, switch, health-check (or roll back).

    Returns
    -------
    dict
        :func:`status` after the install.

    Raises
    ------
    UpdateError
        When the bundle is refused (nothing changed), the new slot's self-test fails (never
        switched to), or the health check after the switch fails (rolled back; the message says why).
    """
    options = options or InstallOptions()
    box = Box(root)
    progress = options.progress or (lambda step, frac: None)
    python = options.python or _base_python()
    trusted = _trusted_for(box, options)
    progress("verify", 0.0)
    bundle = verify_bundle(bundle_path, trusted)  # signature, header, payload and every file: nothing written
    check_policy(box, bundle, options, python)
    _kill_point("verified")
    active = box.active_slot() if box.slot_info(box.active_slot() or "") else None
    target = box.other(active) if active else "a"
    check_space(box, bundle, target)
    _kill_point("space-checked")
    with _Lock(box):
        _kill_point("locked")
        first = active is None
        if first:
            _first_setup(box, bundle, options)
            _kill_point("first-setup")

        def step(name: str, frac: float) -> None:
            progress(name, frac)
            box.update_state(in_progress={"pid": os.getpid(), "step": name, "version": bundle.version,
                                          "slot": target, "progress": frac, "time": time.time()})

        step("clear", 0.05)
        box.log(f"installing {bundle.version} ({bundle.target}, signed by {bundle.signer}) into slot {target}"
                + (f"; slot {active} stays active until the switch" if active else ""))
        _clear_slot(box, target)
        _kill_point("cleared")
        slot_dir = box.slot_path(target)
        step("unpack", 0.15)
        _unpack(box, bundle, slot_dir)
        _kill_point("unpacked")
        step("venv", 0.3)
        _build_venv(box, bundle, slot_dir, python, options)
        _kill_point("venv")
        _check_slot_files(bundle, slot_dir)
        _kill_point("installed")
        step("selftest", 0.6)
        try:
            summary = run_selftest(slot_dir, options.selftest_timeout_s)
        except UpdateError as exc:
            reason = f"the self-test of {bundle.version} in slot {target} failed: {exc}"
            box.log(reason + (f"; staying on slot {active}" if active else ""), level=logging.ERROR)
            box.update_state(in_progress=None, last={"action": "install", "version": bundle.version,
                                                     "outcome": "selftest-failed", "reason": str(exc),
                                                     "time": time.time()})
            raise UpdateError(reason + ("; nothing was switched: the box stays on " + active if active else "")) from None
        _kill_point("selftested")
        write_json(slot_dir / "slot.json", {
            "complete": True, "slot": target, "version": bundle.version, "target": bundle.target,
            "python": bundle.manifest.get("python"), "signer": bundle.signer,
            "payload_sha256": bundle.manifest["payload_sha256"], "installed_at": time.time(), "selftest": summary})
        _kill_point("marked")
        step("switch", 0.8)
        box.update_state(pending={"trial_slot": target, "fallback_slot": active, "version": bundle.version,
                                  "since": time.time(), "pid": os.getpid()})
        _kill_point("pending")
        box.switch_to(target)
        box.log(f"switched current to slot {target} ({bundle.version})")
        _kill_point("switched")
        box.log(restart_service(box))
        _kill_point("restarted")
        step("health", 0.9)
        try:
            health_check(box, target, bundle.version, options.health_timeout_s)
        except UpdateError as exc:
            _kill_point("health-checked")
            _roll_back_after_failed_health(box, target, active, bundle.version, str(exc))
            raise UpdateError(f"{bundle.version} failed its health check after the switch ({exc}); "
                              + (f"rolled back to slot {active}" if active else "no previous slot to roll back to")
                              ) from None
        _kill_point("health-checked")
        box.update_state(pending=None, in_progress=None,
                         last={"action": "install", "version": bundle.version, "outcome": "installed",
                               "slot": target, "reason": "", "time": time.time()})
        box.log(f"{bundle.version} passed its health check in slot {target}")
        _kill_point("confirmed")
        progress("done", 1.0)
    return status(box.root)


def _roll_back_after_failed_health(box: Box, trial: str, fallback: str | None, version: str, why: str) -> None:
    if fallback and box.slot_info(fallback):
        box.switch_to(fallback)
        box.log(f"health check of {version} in slot {trial} failed: {why}; rolled back to slot {fallback}",
                level=logging.ERROR)
        box.log(restart_service(box))
        outcome = "rolled-back"
    else:
        box.log(f"health check of {version} in slot {trial} failed: {why}; no previous slot to roll back to",
                level=logging.ERROR)
        outcome = "health-failed"
    box.update_state(pending=None, in_progress=None,
                     last={"action": "install", "version": version, "outcome": outcome,
                           "reason": f"health check failed: {why}", "slot": fallback, "time": time.time()})


def rollback(root: str | os.PathLike = "/", *, reason: str = "asked for") -> dict[str, Any]:
    """Make the previous slot active again (it must be complete)."""
    box = Box(root)
    with _Lock(box):
        active = box.active_slot()
        if active is None:
            raise UpdateError(f"nothing is installed in {box.root}; install a bundle first")
        prev = box.other(active)
        info = box.slot_info(prev)
        if info is None:
            raise UpdateError(f"there is no complete previous slot to roll back to (slot {prev} is empty or was "
                              f"interrupted); the box stays on slot {active}")
        box.switch_to(prev)
        box.log(f"rolled back from slot {active} to slot {prev} ({info['version']}): {reason}", level=logging.WARNING)
        box.log(restart_service(box))
        box.update_state(pending=None, last={"action": "rollback", "version": info["version"], "outcome": "rolled-back",
                                             "slot": prev, "reason": reason, "time": time.time()})
    return status(box.root)


def boot_health(root: str | os.PathLike = "/", *, timeout_s: float = 90.0) -> dict[str, Any]:
    """The boot-time check (``melisma-health.service``): finish a switch left waiting by a power cut.

    A pending switch whose updater is gone is health-checked now: passed -> confirmed, failed ->
    rolled back. Without a pending switch, the active slot is checked and, when it fails and a
    previous slot is complete, the box rolls back.
    """
    box = Box(root)
    state = box.state()
    pending = state.get("pending")
    active = box.active_slot()
    info = box.slot_info(active) if active is not None else None
    if active is None or info is None:
        raise UpdateError(f"nothing is installed in {box.root}")
    if isinstance(pending, dict) and _pid_alive(pending.get("pid")) and pending.get("pid") != os.getpid():
        raise UpdateError(f"an update (pid {pending['pid']}) is still checking slot {pending.get('trial_slot')}")
    if isinstance(pending, dict) and pending.get("trial_slot") != active:
        # the switch never happened (cut before the rename): nothing to check, say so
        box.update_state(pending=None, in_progress=None,
                         last={"action": "install", "version": pending.get("version"), "outcome": "interrupted",
                               "reason": "interrupted before the switch; the box stayed on slot " + active,
                               "time": time.time()})
        return status(box.root)
    try:
        health_check(box, active, info["version"], timeout_s)
    except UpdateError as exc:
        prev = box.other(active)
        if box.slot_info(prev):
            with _Lock(box):
                box.switch_to(prev)
            box.log(f"boot health check of slot {active} ({info['version']}) failed: {exc}; rolled back to slot "
                    f"{prev}", level=logging.ERROR)
            box.log(restart_service(box))
            box.update_state(pending=None, in_progress=None,
                             last={"action": "health", "version": info["version"], "outcome": "rolled-back",
                                   "reason": f"health check failed: {exc}", "slot": prev, "time": time.time()})
            raise UpdateError(f"slot {active} failed its health check ({exc}); rolled back to slot {prev}") from None
        raise
    if isinstance(pending, dict):
        box.update_state(pending=None, in_progress=None,
                         last={"action": "install", "version": info["version"], "outcome": "installed",
                               "slot": active, "reason": "health check passed after an interruption",
                               "time": time.time()})
        box.log(f"{info['version']} in slot {active} passed the health check left pending")
    return status(box.root)


#: Public name of the helper the box service uses to tell a running updater from a killed one.
pid_alive = _pid_alive

__all__ = [
    "INSTALL_STEPS",
    "Box",
    "InstallOptions",
    "boot_health",
    "health_check",
    "host_target",
    "install",
    "parse_version",
    "pid_alive",
    "rollback",
    "status",
    "write_json",
]
