"""Entry point python-for-android runs in the APK (buildozer.spec's source.dir is this folder)."""

import sys

from melisma_companion.app.main import main

sys.exit(main([]))
