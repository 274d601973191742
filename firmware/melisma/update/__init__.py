"""Firmware bundles and safe updates: signed offline bundles, A/B slots, health check and rollback.

* :mod:`melisma.update.bundle` — the bundle file format, Ed25519 keys, signing and verification.
* :mod:`melisma.update.install` — slots under ``ROOT/opt/melisma``, install, status, rollback, health.
* :mod:`melisma.update.cli` — the ``melisma-update`` command.

See firmware/docs/install.md.
"""
