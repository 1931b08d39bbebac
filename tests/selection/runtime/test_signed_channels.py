"""Signed manifests on the edge: promotion signs, a runtime given the public key refuses forgeries.

Real keys, real version folders written by promotion, real ONNX Runtime; the
`shadow serve` cases run the real CLI in a subprocess.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from selection import Store, promote
from selection.artifacts.content import sha256_bytes
from selection.channels.doctor import diagnose, repair
from selection.channels.layout import version_name
from selection.channels.promotion import rollback
from selection.runtime import ChannelRuntime, ModelLoadError, load_version
from selection.signing import KeyPaths, TrustedKeys, ensure_signing_key, rotate_signing_key
from selection.testing import FEATURES, add_tiny_candidates, tiny_classifier

REPO = Path(__file__).resolve().parents[3]
ROW = [0.5] * len(FEATURES)


@pytest.fixture
def signed(store: Store) -> Store:
    add_tiny_candidates(store, ["c-a", "c-b"])
    promote(store, "c-a")
    return store


def _pub(store: Store) -> Path:
    return KeyPaths.of(store.home.root).public


def _version(store: Store) -> Path:
    return store.home.channel_dir("production").resolve()


def _forge(store: Store, *, seed: int = 7, keep_sig: bool = True) -> Path:
    """What someone who can write the channels folder (but lacks the key) can make.

    A copy of the serving version with another real model, its manifest's
    sha256 and candidate id updated so the model matches, and the old
    signature kept (or dropped); then the channel link swapped to it. Named
    as a real version of history row 99 would be, so only the signature (or
    the store) can tell.
    """
    source = _version(store)
    model = tiny_classifier(seed)
    name = version_name("production", 99, sha256_bytes(model))
    forged = source.parent / name
    shutil.copytree(source, forged)
    (forged / "model.onnx").write_bytes(model)
    manifest = json.loads((forged / "manifest.json").read_text())
    manifest.update(sha256=sha256_bytes(model), candidate_id="c-evil", history_id=99)
    (forged / "manifest.json").write_text(json.dumps(manifest, sort_keys=True, indent=2) + "\n")
    if not keep_sig:
        (forged / "manifest.sig").unlink()
    link = store.home.channel_dir("production")
    tmp = link.with_name(".forge.tmp")
    tmp.symlink_to(Path(".versions") / name)
    os.replace(tmp, link)
    return forged


def test_a_signed_promotion_verifies_and_serves(signed: Store) -> None:
    version = _version(signed)
    assert (version / "manifest.sig").is_file()
    key_id = ensure_signing_key(KeyPaths.of(signed.home.root))[0].key_id
    assert json.loads((version / "manifest.sig").read_text())["key_id"] == key_id
    model = load_version(version, channel="production", trusted_keys=TrustedKeys.load([_pub(signed)]))
    assert model.candidate_id == "c-a"
    with ChannelRuntime(signed.home.channels_dir, reload=False,
                        trusted_keys=[_pub(signed)]) as runtime:
        assert runtime.predict({"rows": [ROW]})["candidate_id"] == "c-a"
        assert runtime.status()["trusted_keys"] == [key_id]


def test_an_edited_manifest_is_refused(signed: Store) -> None:
    path = _version(signed) / "manifest.json"
    path.write_text(path.read_text().replace('"reason": null', '"reason": "trust me"'))
    assert "trust me" in path.read_text()
    load_version(_version(signed), channel="production")  # without keys: served, as before
    with pytest.raises(ModelLoadError) as info:
        ChannelRuntime(signed.home.channels_dir, trusted_keys=[_pub(signed)]).start()
    message = str(info.value)
    assert "\n" not in message
    assert "does not match its signature by key" in message and "refusing this version" in message


def test_a_signature_by_another_key_is_refused(signed: Store, tmp_path: Path) -> None:
    """A second home (someone else's key) re-signs the forged manifest with its own key."""
    from selection.signing import encode_signature

    forged = _forge(signed)
    theirs, _ = ensure_signing_key(KeyPaths.of(tmp_path / "attacker"))
    (forged / "manifest.sig").write_bytes(
        encode_signature((forged / "manifest.json").read_bytes(), theirs))
    with pytest.raises(ModelLoadError, match=f"signed by key {theirs.key_id}, which is not "
                       "trusted here"):
        load_version(forged, channel="production", trusted_keys=TrustedKeys.load([_pub(signed)]))
    # Trusting their key too (a misconfigured app) is what would let it through.
    both = TrustedKeys.load([_pub(signed), KeyPaths.of(tmp_path / "attacker").public])
    assert load_version(forged, channel="production", trusted_keys=both).candidate_id == "c-evil"


def test_an_unsigned_folder_is_refused_when_keys_are_given(signed: Store) -> None:
    (_version(signed) / "manifest.sig").unlink()
    with pytest.raises(ModelLoadError) as info:
        load_version(_version(signed), channel="production",
                     trusted_keys=TrustedKeys.load([_pub(signed)]))
    assert "must hold a signed manifest (manifest.sig) when trusted keys are given; it has " \
        "none" in str(info.value)
    assert load_version(_version(signed), channel="production").candidate_id == "c-a"


def test_a_swapped_model_is_refused(signed: Store) -> None:
    version = _version(signed)
    trusted = TrustedKeys.load([_pub(signed)])
    (version / "model.onnx").write_bytes(tiny_classifier(99))  # manifest and signature untouched
    with pytest.raises(ModelLoadError, match="must hash to the manifest's sha256"):
        load_version(version, channel="production", trusted_keys=trusted)
    # ... and making the manifest agree with the new model breaks the signature.
    forged = _forge(signed)
    with pytest.raises(ModelLoadError, match="does not match its signature"):
        load_version(forged, channel="production", trusted_keys=trusted)


def test_a_hot_swap_to_a_forged_version_is_refused_and_the_old_model_keeps_answering(
        signed: Store) -> None:
    events = []
    runtime = ChannelRuntime(signed.home.channels_dir, reload=False, on_event=events.append,
                             trusted_keys=[_pub(signed)])
    runtime.start()
    forged = _forge(signed, keep_sig=False)
    assert runtime.check_now() is False
    assert runtime.predict({"rows": [ROW]})["candidate_id"] == "c-a"
    assert events[-1].kind == "refused" and "manifest.sig" in (events[-1].detail or "")
    assert runtime.status()["refused"] == 1
    # Copying the old signature beside it changes its files: retried, and refused again.
    shutil.copy(_version_named(signed, "production-1"), forged / "manifest.sig")
    assert runtime.check_now() is False and runtime.status()["refused"] == 2
    assert "does not match its signature" in (events[-1].detail or "")
    assert runtime.predict({"rows": [ROW]})["candidate_id"] == "c-a"
    # A real promotion (signed by the home's key) is swapped in as usual.
    promote(signed, "c-b")
    assert runtime.check_now() is True
    assert runtime.predict({"rows": [ROW]})["candidate_id"] == "c-b"


def _version_named(store: Store, prefix: str) -> Path:
    versions = store.home.channels_dir / ".versions"
    (found,) = [p for p in versions.iterdir() if p.name.startswith(prefix + "-")]
    return found / "manifest.sig"


def test_rotation_two_trusted_keys_then_only_the_new_one(signed: Store) -> None:
    paths = KeyPaths.of(signed.home.root)
    _, old = rotate_signing_key(paths)
    old_pub = paths.retired / f"{old.key_id}.pub"
    both = ChannelRuntime(signed.home.channels_dir, reload=False,
                          trusted_keys=[old_pub, paths.public])
    assert both.start().candidate_id == "c-a"  # signed by the old key: still trusted
    promote(signed, "c-b")  # signed by the new key
    assert both.check_now() is True and both.model.candidate_id == "c-b"
    # Rolling back writes c-a again as a new version: signed with the current key.
    rollback(signed)
    only_new = ChannelRuntime(signed.home.channels_dir, reload=False, trusted_keys=[paths.public])
    assert only_new.start().candidate_id == "c-a"


def test_doctor_reports_missing_invalid_and_retired_signatures(signed: Store) -> None:
    def files_finding() -> tuple[str, str]:
        finding = next(f for f in diagnose(signed) if f.check == "channel production files")
        return finding.status, finding.detail

    status, detail = files_finding()
    assert status == "ok" and "signed by key" in detail
    sig = _version(signed) / "manifest.sig"

    sig.unlink()
    status, detail = files_finding()
    assert status == "fail" and "manifest.sig is missing: the manifest is unsigned" in detail
    assert any(f.status == "fixed" for f in repair(signed))
    assert files_finding()[0] == "ok"

    document = json.loads(sig.read_text())
    document["signature"] = document["signature"][:-4] + "AAA="
    sig.write_text(json.dumps(document))
    status, detail = files_finding()
    assert status == "fail" and "does not match its signature" in detail
    repair(signed)
    assert files_finding()[0] == "ok"

    rotate_signing_key(KeyPaths.of(signed.home.root))
    status, detail = files_finding()
    assert status == "warn" and "signed by the retired key" in detail
    repair(signed)
    status, detail = files_finding()
    new_id = ensure_signing_key(KeyPaths.of(signed.home.root))[0].key_id
    assert status == "ok" and f"signed by key {new_id}" in detail


def test_doctor_says_nothing_about_signatures_in_a_home_without_a_key(signed: Store) -> None:
    shutil.rmtree(signed.home.root / "keys")
    (_version(signed) / "manifest.sig").unlink()
    finding = next(f for f in diagnose(signed) if f.check == "channel production files")
    assert finding.status == "ok" and "signed" not in finding.detail


# -- the real `shadow serve` ------------------------------------------------------------------

def _device(store: Store, tmp_path: Path) -> tuple[Path, Path]:
    """An edge device: a copy of channels/ and the public key, no store, no private key."""
    device = tmp_path / "device"
    shutil.copytree(store.home.channels_dir, device / "channels", symlinks=True)
    shutil.copy(_pub(store), tmp_path / "trusted.pub")
    return device, tmp_path / "trusted.pub"


def _serve(home: Path, *extra: str, env: dict[str, str] | None = None,
           timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shadow", "serve", "--home", str(home), "--port", "0", *extra],
        cwd=REPO, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "SHADOW_STORE": "", **(env or {})},
    )


def test_cli_serve_refuses_a_forged_channel_with_one_line(signed: Store, tmp_path: Path) -> None:
    _forge(signed)
    device, pub = _device(signed, tmp_path)
    result = _serve(device, "--trust-key", str(pub))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("shadow serve: error: ")
    assert "does not match its signature" in lines[0]

    # The same through $SHADOW_TRUST_KEYS, and a key file that is not there.
    result = _serve(device, env={"SHADOW_TRUST_KEYS": str(pub)})
    assert result.returncode == 2 and "does not match its signature" in result.stderr
    result = _serve(device, "--trust-key", str(tmp_path / "nope.pub"))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "cannot read the trusted public key" in result.stderr


def test_cli_serve_with_a_trusted_key_serves_a_signed_channel(signed: Store,
                                                              tmp_path: Path) -> None:
    device, pub = _device(signed, tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "shadow", "serve", "--home", str(device), "--port", "0",
         "--trust-key", str(pub), "--no-reload"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "SHADOW_STORE": ""},
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "manifests must be signed by key" in line, line
        address = line.rsplit(" on http://", 1)[1].split(";")[0].strip()
        host, port = address.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("POST", "/predict", body=json.dumps({"rows": [ROW]}))
        assert json.loads(conn.getresponse().read())["candidate_id"] == "c-a"
        conn.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_cli_promote_says_where_a_new_signing_key_went(store: Store,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from shadow.cli.main import main

    add_tiny_candidates(store, ["c-a", "c-b"])
    paths = KeyPaths.of(store.home.root)
    assert main(["promote", "c-nope", "--home", str(store.home.root)]) == 2
    assert "signing key" not in capsys.readouterr().err and not paths.exists()  # refused: no key
    assert main(["promote", "c-a", "--home", str(store.home.root), "--format", "json"]) == 0
    err = capsys.readouterr().err
    assert f"created signing key {ensure_signing_key(paths)[0].key_id} at {paths.private}" in err
    assert f"give edge apps {paths.public}" in err
    assert main(["promote", "c-b", "--home", str(store.home.root), "--format", "json",
                 "--force", "--reason", "test"]) == 0
    assert "created signing key" not in capsys.readouterr().err  # once only


def _repoint(store: Store, channel: str, version: Path) -> None:
    link = store.home.channel_dir(channel)
    tmp = link.with_name(".repoint.tmp")
    tmp.symlink_to(Path(".versions") / version.name)
    os.replace(tmp, link)


def test_a_signed_version_of_another_channel_is_refused_at_start(signed: Store) -> None:
    """Signed for canary is not signed for production: the manifest names its channel."""
    promote(signed, "c-b", channel="canary")
    canary = signed.home.channel_dir("canary").resolve()
    _repoint(signed, "production", canary)
    trusted = [_pub(signed)]
    for keys in (trusted, None):  # bound always, not only when signatures are checked
        with pytest.raises(ModelLoadError) as info:
            ChannelRuntime(signed.home.channels_dir, "production", reload=False,
                           trusted_keys=keys).start()
        message = str(info.value)
        assert "\n" not in message
        assert message.startswith(f"refusing version {canary.name} for channel 'production': "
                                  "its manifest says it was promoted to channel 'canary'")
        assert "shadow rollback --channel production" in message
    # The canary itself still serves from its own link.
    with ChannelRuntime(signed.home.channels_dir, "canary", reload=False,
                        trusted_keys=trusted) as runtime:
        assert runtime.model.candidate_id == "c-b"


def test_a_hot_swap_to_another_channels_version_is_refused_and_the_old_model_answers(
        signed: Store) -> None:
    promote(signed, "c-b", channel="canary")
    events = []
    runtime = ChannelRuntime(signed.home.channels_dir, reload=False, on_event=events.append,
                             trusted_keys=[_pub(signed)])
    runtime.start()
    _repoint(signed, "production", signed.home.channel_dir("canary").resolve())
    assert runtime.check_now() is False
    assert runtime.predict({"rows": [ROW]})["candidate_id"] == "c-a"
    assert events[-1].kind == "refused" and "promoted to channel 'canary'" in events[-1].detail


def test_a_version_under_another_name_is_refused(signed: Store) -> None:
    """A signed production version copied to another history row's name is not that row."""
    source = _version(signed)
    renamed = source.parent / version_name("production", 42, json.loads(
        (source / "manifest.json").read_text())["sha256"])
    shutil.copytree(source, renamed)
    _repoint(signed, "production", renamed)
    with pytest.raises(ModelLoadError, match=f"refusing version {renamed.name} for channel "
                       f"'production': a version directory must be named after its manifest's "
                       f"channel, history_id and sha256 \\({source.name}\\)"):
        ChannelRuntime(signed.home.channels_dir, reload=False,
                       trusted_keys=[_pub(signed)]).start()
