"""The box's config file picks the front panel's port; the command line still wins."""

from __future__ import annotations

from melisma.device.service import _parser, apply_config


def _args(argv: list[str]):
    args = _parser().parse_args(argv)
    apply_config(args, argv)
    return args


def test_the_panel_port_comes_from_the_config_unless_given(tmp_path):
    config = tmp_path / "box.toml"
    config.write_text('[panel]\nport = "/dev/ttyACM7"\n', encoding="utf-8")
    assert _args(["run", "--config", str(config)]).panel == "/dev/ttyACM7"
    assert _args(["run", "--config", str(config), "--panel", "/tmp/sim-pty"]).panel == "/tmp/sim-pty"
    config.write_text('[panel]\nport = "none"\n', encoding="utf-8")
    assert _args(["run", "--config", str(config)]).panel is None
    config.write_text("", encoding="utf-8")
    assert _args(["run", "--config", str(config)]).panel == "auto"  # the shipped default: found by USB id
