"""``melisma-update``: keys, bundle verification, install, status, rollback, health (see install.md).

::

    melisma-update keygen --out DIR
    melisma-update verify FILE [--trusted-keys DIR] [--root ROOT]
    melisma-update install FILE [--root ROOT] [--trusted-keys DIR] [--allow-downgrade]
    melisma-update status [--root ROOT] [--json]
    melisma-update rollback [--root ROOT]
    melisma-update health [--root ROOT]          # the boot-time check (melisma-health.service)
    melisma-update install-request [--root ROOT]  # an install asked for over BLE (melisma-update.service)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from .. import __version__
from ..errors import MelismaError, UpdateError


def build_parser() -> argparse.ArgumentParser:
    """The ``melisma-update`` argument parser."""
    ap = argparse.ArgumentParser(prog="melisma-update", description="Melisma firmware: signed bundles, A/B slots, "
                                 "health check and rollback.")
    ap.add_argument("--version", action="version", version=f"melisma-update {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_root(p: argparse.ArgumentParser) -> None:
        p.add_argument("--root", default="/", help="the system to work on (default /; a scratch folder in tests)")
        p.add_argument("-q", "--quiet", action="store_true", help="print only errors")

    p = sub.add_parser("keygen", help="make a signing key pair: DIR/signing.key (private) and DIR/signing.pub")
    p.add_argument("--out", required=True, metavar="DIR")

    p = sub.add_parser("verify", help="check a bundle's signature and every digest; change nothing")
    p.add_argument("bundle", metavar="FILE")
    p.add_argument("--trusted-keys", metavar="DIR", help="folder of trusted *.pub keys (default ROOT/etc/melisma/trusted-keys)")
    with_root(p)

    p = sub.add_parser("install", help="install a bundle into the inactive slot, self-test, switch, health-check")
    p.add_argument("bundle", metavar="FILE")
    p.add_argument("--trusted-keys", metavar="DIR",
                   help="folder of trusted *.pub keys; needed for the first install, which trusts them from then on")
    p.add_argument("--allow-downgrade", action="store_true", help="install a version that is not newer")
    p.add_argument("--python", metavar="PATH", help="interpreter to build the slot with (default: this one's base)")
    p.add_argument("--health-timeout", type=float, default=None, metavar="S",
                   help="seconds the health check after the switch may take (default: box.toml update.health_timeout_s)")
    p.add_argument("--selftest-timeout", type=float, default=300.0, metavar="S")
    p.add_argument("--no-restart", action="store_true", help="do not restart the service after the switch")
    p.add_argument("--dev-site-packages", metavar="DIR", help=argparse.SUPPRESS)  # tests: --deps external bundles
    with_root(p)

    p = sub.add_parser("status", help="active and previous slot and version, last outcome")
    p.add_argument("--json", action="store_true", help="print JSON")
    with_root(p)

    p = sub.add_parser("rollback", help="make the previous slot active again")
    with_root(p)

    p = sub.add_parser("health", help="health-check the active slot (boot); roll back when it fails")
    p.add_argument("--timeout", type=float, default=None, metavar="S")
    with_root(p)

    p = sub.add_parser("install-request", help="install the bundle a BLE client uploaded (run by melisma-update.service)")
    p.add_argument("--data-dir", default=None, help="the box's data folder (default ROOT/var/lib/melisma)")
    p.add_argument("--health-timeout", type=float, default=None, metavar="S",
                   help="seconds the health check after the switch may take (default: box.toml update.health_timeout_s)")
    p.add_argument("--dev-site-packages", metavar="DIR", help=argparse.SUPPRESS)  # tests: --deps external bundles
    with_root(p)
    return ap


def _health_timeout(root: str, given: float | None) -> float:
    if given is not None:
        return given
    from ..device.config import load_config
    from .install import Box

    path = Box(root).config_path
    if path.exists():
        try:
            return load_config(path).update.health_timeout_s
        except MelismaError:
            pass
    return 90.0


def _print_status(st: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(st, indent=2, sort_keys=True))
        return
    if not st["installed"]:
        print(f"nothing installed in {st['root']}")
    else:
        print(f"active:   slot {st['active_slot']}, version {st['active_version']}")
        print("previous: " + (f"slot {st['previous_slot']}, version {st['previous_version']}"
                              if st["previous_slot"] else "none"))
    last = st.get("last_update")
    if last:
        print(f"last:     {last.get('action')} {last.get('version')}: {last.get('outcome')}"
              + (f" ({last['reason']})" if last.get("reason") else ""))
    ip = st.get("in_progress")
    if ip:
        print(f"update:   {'running' if ip.get('running') else 'interrupted'} at step {ip.get('step')} "
              f"({ip.get('version')} into slot {ip.get('slot')})")
    if st.get("pending_health_check"):
        print(f"pending:  slot {st['pending_health_check'].get('trial_slot')} waits for its health check")


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``melisma-update``; errors print one line and exit 12 (2 for a bad option)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
                        format="melisma-update: %(message)s")
    try:
        return _run(args)
    except MelismaError as exc:
        print(f"melisma-update: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("melisma-update: interrupted; the box stays on the slot `status` shows", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:
    from . import bundle as b
    from . import install as inst

    if args.command == "keygen":
        priv, pub = b.keygen(args.out)
        key = b.load_public_key(pub)
        print(f"wrote {priv} (private: keep it off the box) and {pub} (key id {b.key_id(key)})")
        return 0
    if args.command == "verify":
        keys_dir = args.trusted_keys or inst.Box(args.root).trusted_dir
        bundle = b.verify_bundle(args.bundle, b.load_trusted_keys(keys_dir))
        m = bundle.manifest
        print(f"{args.bundle}: good signature by {bundle.signer}; melisma {m['version']} for {m['target']} "
              f"(Python {m['python']}), {len(m['files'])} files, all digests match")
        return 0
    if args.command == "install":
        opts = inst.InstallOptions(
            trusted_keys=Path(args.trusted_keys) if args.trusted_keys else None,
            allow_downgrade=args.allow_downgrade, python=args.python,
            dev_site_packages=Path(args.dev_site_packages) if args.dev_site_packages else None,
            selftest_timeout_s=args.selftest_timeout, health_timeout_s=_health_timeout(args.root, args.health_timeout),
            restart=not args.no_restart)
        st = inst.install(args.bundle, args.root, opts)
        if not args.quiet:
            print(f"installed melisma {st['active_version']} in slot {st['active_slot']}"
                  + (f" (previous: {st['previous_version']} in slot {st['previous_slot']})" if st["previous_slot"] else ""))
        return 0
    if args.command == "status":
        _print_status(inst.status(args.root), args.json)
        return 0
    if args.command == "rollback":
        st = inst.rollback(args.root)
        if not args.quiet:
            print(f"rolled back: active slot {st['active_slot']}, version {st['active_version']}")
        return 0
    if args.command == "health":
        st = inst.boot_health(args.root, timeout_s=_health_timeout(args.root, args.timeout))
        if not args.quiet:
            print(f"healthy: slot {st['active_slot']}, version {st['active_version']}")
        return 0
    if args.command == "install-request":
        from .request import run_install_request

        opts = inst.InstallOptions(health_timeout_s=_health_timeout(args.root, args.health_timeout),
                                   dev_site_packages=Path(args.dev_site_packages) if args.dev_site_packages else None)
        return run_install_request(args.root, args.data_dir, options=opts)
    raise UpdateError(f"unknown command {args.command}")  # pragma: no cover - argparse guards this


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
