"""Copy the firmware modules the app imports (``melisma`` package root, ``errors``, ``protocol``) beside the
app, so ``buildozer android debug`` in companion/ packs them. They import only the standard library.

Usage::

    python companion/android/prepare.py
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

COMPANION = Path(__file__).resolve().parents[1]
FIRMWARE = COMPANION.parent / "firmware" / "melisma"
MODULES = ("__init__.py", "errors.py", "protocol.py")


def prepare(dest: Path = COMPANION / "melisma") -> list[Path]:
    dest.mkdir(exist_ok=True)
    out = []
    for name in MODULES:
        shutil.copyfile(FIRMWARE / name, dest / name)
        out.append(dest / name)
    return out


if __name__ == "__main__":
    for path in prepare():
        print(path)
    sys.exit(0)
