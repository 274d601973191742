"""What of the Android build can be checked without the Android SDK: the spec's requirements and permissions,
the pinned bleak recipe, the files the APK packs, and the runtime permission logic.

The permission logic runs against a stand-in for Android's permission API (``FakeAndroid``): no Android
runtime can run here. It answers from another thread, as Android's UI thread does."""

from __future__ import annotations

import ast
import asyncio
import configparser
import importlib.metadata
import re
import sys
import threading
from pathlib import Path

import bleak
from melisma_companion.app import permissions as perm

ROOT = Path(__file__).resolve().parents[3]
COMPANION = ROOT / "companion"
STDLIB = set(sys.stdlib_module_names)


def spec() -> configparser.SectionProxy:
    cp = configparser.ConfigParser(interpolation=None)
    cp.read(COMPANION / "buildozer.spec")
    return cp["app"]


def test_spec_requirements_pin_kivy_and_bleak_like_the_desktop():
    reqs = [r.strip() for r in spec()["requirements"].split(",")]
    assert "kivy==2.3.1" in reqs
    assert f"bleak=={importlib.metadata.version('bleak')}" in reqs
    assert "pyjnius" in reqs and "python3" in reqs
    assert not any(r.startswith(("bumble", "numpy", "av", "pedalboard")) for r in reqs)  # the box's, not the app's


def test_spec_permissions_android12_nearby_devices_and_location_only_for_older():
    raw = spec()["android.permissions"]
    entries = [e.strip() for e in re.findall(r"\([^)]*\)|[^,()]+", raw) if e.strip(" ,")]
    parsed = {}
    for e in entries:
        if e.startswith("("):
            fields = dict(kv.split("=", 1) for kv in e.strip("()").split(";"))
            parsed[fields.pop("name")] = fields
        else:
            parsed[e] = {}
    assert parsed[perm.BLUETOOTH_SCAN] == {"usesPermissionFlags": "neverForLocation"}
    assert parsed[perm.BLUETOOTH_CONNECT] == {}
    for legacy in ("android.permission.BLUETOOTH", "android.permission.BLUETOOTH_ADMIN", perm.ACCESS_FINE_LOCATION):
        assert parsed[legacy] == {"maxSdkVersion": "30"}, legacy
    assert "ACCESS_BACKGROUND_LOCATION" not in raw and "ACCESS_COARSE_LOCATION" not in raw
    # every permission the app asks for at run time is declared
    for sdk in (23, 29, 30, 31, 34):
        assert set(perm.required_permissions(sdk)) <= set(parsed)


def test_p4a_and_the_bleak_recipe_are_pinned():
    s = spec()
    assert re.fullmatch(r"v\d{4}\.\d{2}\.\d{2}", s["p4a.branch"]), "p4a must be a release tag, not a branch"
    recipes = COMPANION / s["p4a.local_recipes"]
    source = (recipes / "bleak" / "__init__.py").read_text()
    tree = ast.parse(source)
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "BleakRecipe")
    attrs = {t.id: ast.literal_eval(a.value) for a in cls.body if isinstance(a, ast.Assign)
             for t in a.targets if isinstance(t, ast.Name) and isinstance(a.value, ast.Constant)}
    assert attrs["version"] == importlib.metadata.version("bleak")  # the same bleak as the desktop app
    assert "{version}" in attrs["url"] and "refs/tags/v" in attrs["url"] and not attrs["url"].startswith("git+")
    # the Java callbacks the recipe copies exist where it looks for them in that bleak release
    java = Path(bleak.__file__).parent / "backends" / "p4android" / "java" / "com" / "github" / "hbldh" / "bleak"
    assert sorted(p.name for p in java.glob("*.java")) == ["PythonBluetoothGattCallback.java",
                                                           "PythonScanCallback.java"]
    assert (recipes / "bleak" / "fix_setup.py").exists()


def test_the_apk_packs_only_standard_library_firmware_modules(tmp_path):
    sys.path.insert(0, str(COMPANION / "android"))
    try:
        import prepare
    finally:
        sys.path.pop(0)
    copied = prepare.prepare(tmp_path / "melisma")
    assert sorted(p.name for p in copied) == ["__init__.py", "errors.py", "protocol.py"]
    for path in copied:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                assert all(a.name.split(".")[0] in STDLIB for a in node.names), path
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                assert node.module.split(".")[0] in STDLIB | {"__future__"}, (path, node.module)
    # and the app imports from the firmware side only those (the demo module, the box half, is excluded)
    app_dir = COMPANION / "melisma_companion"
    for path in app_dir.rglob("*.py"):
        if path.name == "demo.py" or "bumble" in path.name:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("melisma."):
                assert node.module in ("melisma.protocol", "melisma.errors"), (path, node.module)
    assert "demo.py" in spec()["source.exclude_patterns"]


class FakeAndroid:
    """Stands in for Android's permission API; grants or refuses from another thread."""

    def __init__(self, sdk_int: int, *, granted=(), answer=True):
        self.sdk_int = sdk_int
        self.granted = set(granted)
        self.answer = answer
        self.requested: list[list[str]] = []

    def check(self, permission: str) -> bool:
        return permission in self.granted

    def request(self, permissions, callback):
        self.requested.append(list(permissions))

        def ui_thread():
            grants = [self.answer] * len(permissions)
            if self.answer:
                self.granted.update(permissions)
            callback(list(permissions), grants)

        threading.Thread(target=ui_thread).start()


def test_android12_asks_for_nearby_devices_only():
    api = FakeAndroid(33)
    result = asyncio.run(perm.ensure_bluetooth_permissions(api))
    assert result.granted and api.requested == [[perm.BLUETOOTH_SCAN, perm.BLUETOOTH_CONNECT]]
    assert asyncio.run(perm.ensure_bluetooth_permissions(api)).granted and len(api.requested) == 1  # asked once


def test_android11_asks_for_location():
    api = FakeAndroid(30)
    assert asyncio.run(perm.ensure_bluetooth_permissions(api)).granted
    assert api.requested == [[perm.ACCESS_FINE_LOCATION]]


def test_refused_permission_gives_a_clear_message():
    result = asyncio.run(perm.ensure_bluetooth_permissions(FakeAndroid(31, answer=False)))
    assert not result.granted and set(result.missing) == {perm.BLUETOOTH_SCAN, perm.BLUETOOTH_CONNECT}
    assert "Nearby devices" in result.message and "Settings" in result.message
    old = asyncio.run(perm.ensure_bluetooth_permissions(FakeAndroid(28, answer=False)))
    assert not old.granted and "Location" in old.message and "does not use your location" in old.message


def test_desktop_needs_no_permission():
    assert perm.android_api("linux") is None
    assert asyncio.run(perm.ensure_bluetooth_permissions(None)).granted
