"""Device profiles are validated data: every figure has a source, bad files name the key and fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shadow.cli.main import main
from shadow.devices import all_devices, get_device
from shadow.devices.edge.profile import BUILTIN_DIR, load_profile, load_profiles
from shadow.errors import ConfigError

#: The SM8550 profile's per-op line, which the bad-value cases edit.
PER_OP = "per_op_s = 1.958e-06"
EXPECTED = {"snapdragon-8-gen-2-htp", "snapdragon-888-htp", "cortex-a55", "host-cpu"}


def test_builtin_profiles_load_with_a_source_for_every_figure():
    profiles = load_profiles([BUILTIN_DIR])
    assert EXPECTED <= set(profiles)
    sm8550 = profiles["snapdragon-8-gen-2-htp"]
    assert sm8550.qnn == {"backend": "htp", "soc_model": 43, "htp_arch": 73} and sm8550.soc == "SM8550"
    assert profiles["snapdragon-888-htp"].qnn["soc_model"] == 30
    assert profiles["cortex-a55"].qnn is None and profiles["cortex-a55"].supports("Erf")
    assert not sm8550.supports("Erf") and sm8550.supports("Conv")
    assert sm8550.published_latency["resnet50.a8w8"] > 0
    for profile in profiles.values():
        assert profile.sources and all(s.strip() for s in profile.sources.values())


def _write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(text)
    return path


def _profile_text(name: str = "my-npu", extra: str = "", numerics: str = "a16w8") -> str:
    body = (BUILTIN_DIR / "snapdragon-8-gen-2-htp.toml").read_text()
    body = body.replace('name = "snapdragon-8-gen-2-htp"', f'name = "{name}"')
    return body.replace('numerics = "a8w8"', f'numerics = "{numerics}"') + extra


@pytest.mark.parametrize(("edit", "match"), [
    (lambda t: t.replace("[dispatch]", "[dispatch]\nper_opp_s = 1.0"),
     r"\[dispatch\]: unknown key 'per_opp_s'; known keys: .*per_op_s"),
    (lambda t: t.replace("[memory]", "[memroy]"), r"unknown key 'memroy'; known keys: .*memory"),
    (lambda t: t.replace(PER_OP, "per_op_s = nan"), r"dispatch\.per_op_s: must be >= 0 and finite, got nan"),
    (lambda t: t.replace(PER_OP, "per_op_s = inf"), r"dispatch\.per_op_s: must be >= 0 and finite, got inf"),
    (lambda t: t.replace('"dispatch.per_op_s" = ', '"unused" = '), r"dispatch\.per_op_s: has no source.*\[sources\]"),
    (lambda t: t.replace('kind = "npu"', 'kind = "gpu"'), r"kind: must be one of npu, cpu, host"),
    (lambda t: t.replace(PER_OP, "per_op_s = -1.0"), r"dispatch\.per_op_s: must be >= 0"),
    (lambda t: t.replace("[memory]", "[memory\n"), r"is not valid TOML"),
    (lambda t: t.replace('numerics = "a8w8"', 'numerics = "int4"'), r"numerics: must be one of a8w8"),
    (lambda t: t.replace("soc_model = 43\n", ""), r"\[qnn\]: needs soc_model and htp_arch"),
])
def test_bad_profiles_name_the_file_key_and_fix(tmp_path, edit, match):
    path = _write(tmp_path, "bad", edit((BUILTIN_DIR / "snapdragon-8-gen-2-htp.toml").read_text()))
    with pytest.raises(ConfigError, match=match) as info:
        load_profile(path)
    assert str(path) in str(info.value)


def test_user_profiles_from_shadow_devices(tmp_path, monkeypatch):
    _write(tmp_path / "mine", "my-npu", _profile_text())
    monkeypatch.setenv("SHADOW_DEVICES", str(tmp_path / "mine"))
    device = get_device("my-npu")
    assert device.numerics == "a16w8" and "my-npu" in all_devices()
    _write(tmp_path / "clash", "dup", _profile_text(name="cortex-a55"))
    monkeypatch.setenv("SHADOW_DEVICES", str(tmp_path / "clash"))
    with pytest.raises(ConfigError, match=r"'cortex-a55' is already defined by .*cortex-a55\.toml"):
        get_device("cortex-a55")
    monkeypatch.setenv("SHADOW_DEVICES", str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match=r"SHADOW_DEVICES: .*nope is not a folder"):
        get_device("anything")


def test_unknown_device_lists_known_ones(monkeypatch):
    monkeypatch.delenv("SHADOW_DEVICES", raising=False)
    with pytest.raises(ConfigError, match=r"unknown device 'tpu'.*snapdragon-8-gen-2-htp.*SHADOW_DEVICES"):
        get_device("tpu")


def test_devices_cli_lists_profiles(capsys, monkeypatch):
    monkeypatch.delenv("SHADOW_DEVICES", raising=False)
    assert main(["devices", "--format", "json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert EXPECTED - {"host-cpu"} <= set(rows) and rows["host-cpu"]["kind"] == "host"
    assert rows["snapdragon-8-gen-2-htp"]["soc"] == "SM8550"
    assert rows["snapdragon-8-gen-2-htp"]["numerics"] == "a8w8"
    assert "https://" in rows["snapdragon-8-gen-2-htp"]["source"]
    assert main(["devices", "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("name,kind,numerics,soc")
    assert main(["devices"]) == 0
    assert "cortex-a55" in capsys.readouterr().out


def test_bad_user_profile_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    _write(tmp_path, "broken", "name = 'x'\n")
    monkeypatch.setenv("SHADOW_DEVICES", str(tmp_path))
    assert main(["devices"]) == 2
    err = capsys.readouterr().err
    assert "broken.toml" in err and "Traceback" not in err
