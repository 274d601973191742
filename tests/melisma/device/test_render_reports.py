"""The render report kept beside its plan (device/render_reports.py): named, written atomically,
refused when its name would not be a valid file name, deleted with its plan."""

from __future__ import annotations

import json

from melisma.device.render_reports import store_render_report
from melisma.device.storage import Storage
from melisma.protocol import FileKind, render_report_name


def test_the_report_is_kept_beside_the_plan_and_listed_as_a_plan_file(tmp_path):
    store = Storage(tmp_path)
    plan = store.path(FileKind.PLAN, "my-take.json")
    plan.write_text("{}")
    report = {"loudness": {"integrated_lufs": -14.2, "true_peak_dbtp": -1.4, "measured": "file"}, "note": "滑音"}
    written = store_render_report(plan, report)
    assert written == plan.with_name("my-take.report.json")
    assert json.loads(written.read_text(encoding="utf-8")) == report
    assert [e.name for e in store.list(FileKind.PLAN)] == ["my-take.json", "my-take.report.json"]
    # a second render replaces it (the latest render wins), never leaving a temporary file
    store_render_report(plan, {"loudness": {"integrated_lufs": -13.9}})
    assert json.loads(written.read_text(encoding="utf-8"))["loudness"]["integrated_lufs"] == -13.9
    assert sorted(p.name for p in plan.parent.iterdir()) == ["my-take.json", "my-take.report.json"]
    # deleting the plan deletes its report
    store.delete(FileKind.PLAN, "my-take.json")
    assert not written.exists()


def test_a_plan_name_too_long_for_its_report_name_keeps_no_report(tmp_path):
    store = Storage(tmp_path)
    name = "a" * 40 + ".json"  # 45 bytes: the report's name would be 52, over the 48 the protocol allows
    plan = store.path(FileKind.PLAN, name)
    plan.write_text("{}")
    assert render_report_name(name) == "a" * 40 + ".report.json"
    assert store_render_report(plan, {"loudness": {}}) is None
    assert [p.name for p in plan.parent.iterdir()] == [name]
