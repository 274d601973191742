"""The one-click mix runs on numpy, scipy.fft and the compiled kernels alone: importing
scipy.signal (which pulls in scipy.stats, scipy.interpolate and scipy.optimize) would cost ~50 MB
of the Pi Zero 2 W's memory bound, so a whole mix, clean-up stages included, must not do it."""

from __future__ import annotations

import json
import subprocess
import sys

from tools.corpus import make_scenario
from tools.corpus.scenarios import write_scenario

HEAVY = ("scipy.signal", "scipy.stats", "scipy.interpolate", "scipy.optimize")


def test_a_mix_with_bleed_hum_and_noise_imports_no_scipy_signal(tmp_path):
    # bleed (the canceller), mains hum (the notches), noise (the denoiser and gate), an offset
    sc = make_scenario(seed=5, duration_s=6.0, backing_renderer="numpy", offset_ms=120.0, bleed_db=-14.0, snr_db=18.0,
                       hum_hz=50)
    paths = write_scenario(sc, tmp_path / "in", take_format="wav", backing_format="wav")
    code = (
        "import sys, json\n"
        "from melisma import pipeline\n"
        f"report = pipeline.mix_files({str(paths['take'])!r}, {str(paths['backing'])!r}, {str(tmp_path / 'mix.m4a')!r}, "
        "style='cpop')\n"
        "actions = [a['action'] for a in report['cleanup']['actions']]\n"
        f"print(json.dumps({{'heavy': sorted(m for m in {HEAVY!r} if m in sys.modules), 'actions': actions}}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert "bleed_removal" in result["actions"] and "hum_notch" in result["actions"], result["actions"]
    assert result["heavy"] == []
