"""The render report, kept beside its plan so the app can show the written file's own loudness.

A full render (``Render`` job) returns the mix report (:func:`melisma.pipeline.render_plan`):
its ``loudness`` block holds the integrated loudness and true peak *measured on the written
file*. The box writes that report next to the plan, as a plan-kind file named
:func:`melisma.protocol.render_report_name` (``my-take.json`` -> ``my-take.report.json``), and the
app downloads it with
the plan after a render, through the ordinary file transfer (``DownloadBegin`` with kind 5,
plan): no protocol change. The latest full render of a plan wins; previews never write it.

>>> from melisma.protocol import render_report_name
>>> render_report_name("my-take.json")
'my-take.report.json'
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ..protocol import FileKind, check_name, render_report_name

logger = logging.getLogger(__name__)


def store_render_report(plan_path: str | Path, report: dict[str, Any]) -> Path | None:
    """Write ``report`` atomically beside the plan at ``plan_path``; the path written, or None when
    it could not be (a plan name too long for the report's name, a full disk): the mix itself is
    done and stays, the app then shows the target loudness as before.
    """
    from ..audio_io import atomic_write_text

    plan_path = Path(plan_path)
    name = render_report_name(plan_path.name)
    try:
        check_name(name, FileKind.PLAN)
    except Exception as exc:
        logger.warning("render report for %s not kept: %s", plan_path.name, exc)
        return None
    target = plan_path.with_name(name)
    try:
        atomic_write_text(target, json.dumps(report, ensure_ascii=False, default=str), overwrite=True)
    except OSError as exc:
        logger.warning("render report %s not written: %s", target, exc.strerror or exc)
        return None
    return target
