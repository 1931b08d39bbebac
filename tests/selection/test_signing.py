"""selection.signing: the home's key pair, signing and verifying manifests, and `shadow keys`."""

from __future__ import annotations

import base64
import json
import os
import stat
import threading
from pathlib import Path

import pytest

from selection.errors import ConfigError, IntegrityError
from selection.signing import (
    KeyPaths,
    ManifestSignatureError,
    SigningKeyError,
    TrustedKeys,
    encode_signature,
    ensure_signing_key,
    load_public_key,
    load_signing_key,
    retired_keys,
    rotate_signing_key,
    trust_keys_from_env,
    verify_manifest,
)
from shadow.cli.main import main

MANIFEST = b'{\n  "sha256": "' + b"a" * 64 + b'"\n}\n'


@pytest.fixture
def paths(tmp_path: Path) -> KeyPaths:
    return KeyPaths.of(tmp_path / "home")


def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_the_key_pair_is_created_once_private_and_loads_again(paths: KeyPaths) -> None:
    key, created = ensure_signing_key(paths)
    assert created and paths.private.is_file() and paths.public.is_file()
    assert stat.S_IMODE(paths.private.stat().st_mode) == 0o600
    assert stat.S_IMODE(paths.private.parent.stat().st_mode) == 0o700
    assert b"PRIVATE KEY" in paths.private.read_bytes()
    assert b"PUBLIC KEY" in paths.public.read_bytes() and b"PRIVATE" not in paths.public.read_bytes()
    again, created = ensure_signing_key(paths)
    assert not created and again.key_id == key.key_id
    assert load_public_key(paths.public).key_id == key.key_id
    assert len(key.key_id) == 16 and int(key.key_id, 16) >= 0
    assert list(paths.private.parent.glob(".*.tmp")) == []


def _create_at_once(paths: KeyPaths, count: int) -> list[tuple[str, bool]]:
    """``count`` threads call ensure_signing_key together; their (key id, created) answers."""
    start = threading.Barrier(count)
    results: list[tuple[str, bool]] = []
    errors: list[BaseException] = []

    def create() -> None:
        start.wait(timeout=30)
        try:
            key, created = ensure_signing_key(paths)
            results.append((key.key_id, created))
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    return results


def test_threads_creating_the_key_at_once_agree_on_one_key(tmp_path: Path) -> None:
    """Creators in one process share a pid: each needs its own temporary file."""
    for attempt in range(15):
        paths = KeyPaths.of(tmp_path / f"home-{attempt}")
        results = _create_at_once(paths, 8)
        assert len(results) == 8
        assert len({key_id for key_id, _ in results}) == 1, (attempt, results)
        assert sum(created for _, created in results) == 1, (attempt, results)
        assert load_signing_key(paths).key_id == results[0][0]
        assert load_public_key(paths.public).key_id == results[0][0]
        assert list(paths.private.parent.glob(".*.tmp")) == []


def test_a_lost_public_key_is_written_again_from_the_private_key(paths: KeyPaths) -> None:
    key, _ = ensure_signing_key(paths)
    paths.public.unlink()
    assert load_signing_key(paths).key_id == key.key_id
    assert load_public_key(paths.public).key_id == key.key_id


def test_a_signature_verifies_and_is_deterministic(paths: KeyPaths) -> None:
    key, _ = ensure_signing_key(paths)
    sig = encode_signature(MANIFEST, key)
    assert sig == encode_signature(MANIFEST, key)
    document = json.loads(sig)
    assert document["algorithm"] == "ed25519" and document["key_id"] == key.key_id
    assert len(base64.b64decode(document["signature"])) == 64
    trusted = TrustedKeys.load([paths.public])
    assert verify_manifest(MANIFEST, sig, trusted).key_id == key.key_id


def test_an_edited_manifest_another_key_and_garbage_are_refused(paths: KeyPaths,
                                                                tmp_path: Path) -> None:
    key, _ = ensure_signing_key(paths)
    other, _ = ensure_signing_key(KeyPaths.of(tmp_path / "other"))
    trusted = TrustedKeys.load([paths.public])
    sig = encode_signature(MANIFEST, key)

    with pytest.raises(ManifestSignatureError) as info:
        verify_manifest(MANIFEST.replace(b"a", b"b"), sig, trusted, where="v/manifest.sig")
    assert "v/manifest.sig does not match its signature" in _one_line(info)
    assert isinstance(info.value, IntegrityError)

    with pytest.raises(ManifestSignatureError) as info:
        verify_manifest(MANIFEST, encode_signature(MANIFEST, other), trusted)
    message = _one_line(info)
    assert f"signed by key {other.key_id}, which is not trusted here (trusted: {key.key_id})" \
        in message and "`shadow keys show`" in message

    # Another key's signature under the trusted key's id: the id is a name, not a proof.
    forged = json.loads(encode_signature(MANIFEST, other))
    forged["key_id"] = key.key_id
    with pytest.raises(ManifestSignatureError, match="does not match its signature"):
        verify_manifest(MANIFEST, json.dumps(forged).encode(), trusted)

    for bad in (b"", b"[]", b'{"key_id": 1}', b"\xff"):
        with pytest.raises(ManifestSignatureError, match="must be a JSON object with key_id"):
            verify_manifest(MANIFEST, bad, trusted)
    wrong_alg = json.loads(sig)
    wrong_alg["algorithm"] = "none"
    with pytest.raises(ManifestSignatureError, match="must be an ed25519 signature; it says 'none'"):
        verify_manifest(MANIFEST, json.dumps(wrong_alg).encode(), trusted)
    not_b64 = json.loads(sig)
    not_b64["signature"] = "***"
    with pytest.raises(ManifestSignatureError, match="does not match its signature"):
        verify_manifest(MANIFEST, json.dumps(not_b64).encode(), trusted)


def test_bad_key_files_are_one_line_config_errors(paths: KeyPaths, tmp_path: Path) -> None:
    with pytest.raises(SigningKeyError) as info:
        load_signing_key(paths)
    assert "no signing key at" in _one_line(info) and "`shadow keys init`" in str(info.value)
    assert isinstance(info.value, ConfigError)

    ensure_signing_key(paths)
    os.chmod(paths.private, 0o644)
    with pytest.raises(SigningKeyError) as info:
        load_signing_key(paths)
    assert f"its mode is 0644; run `chmod 600 {paths.private}`" in _one_line(info)
    os.chmod(paths.private, 0o600)

    with pytest.raises(SigningKeyError) as info:
        load_public_key(paths.private)  # the private key handed out by mistake
    assert "that is a private key: give apps the .pub file" in _one_line(info)
    junk = tmp_path / "junk.pub"
    junk.write_text("not a key")
    with pytest.raises(SigningKeyError, match="must hold a PEM Ed25519 public key"):
        load_public_key(junk)
    with pytest.raises(SigningKeyError, match=r"cannot read the trusted public key .*missing\.pub"):
        load_public_key(tmp_path / "missing.pub")
    with pytest.raises(SigningKeyError, match="at least one public key"):
        TrustedKeys.load([])

    paths.private.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(SigningKeyError, match="must hold an unencrypted PEM Ed25519 private key"):
        load_signing_key(paths)


def test_rotation_retires_the_old_public_key_and_both_verify(paths: KeyPaths) -> None:
    old, _ = ensure_signing_key(paths)
    old_pub = paths.public.read_bytes()
    new, retired = rotate_signing_key(paths)
    assert retired.key_id == old.key_id != new.key_id
    assert (paths.retired / f"{old.key_id}.pub").read_bytes() == old_pub
    assert load_signing_key(paths).key_id == new.key_id
    assert list(retired_keys(paths)) == [old.key_id]
    both = TrustedKeys.load([paths.retired / f"{old.key_id}.pub", paths.public])
    assert verify_manifest(MANIFEST, encode_signature(MANIFEST, old), both).key_id == old.key_id
    assert verify_manifest(MANIFEST, encode_signature(MANIFEST, new), both).key_id == new.key_id
    with pytest.raises(ManifestSignatureError, match="not trusted here"):
        verify_manifest(MANIFEST, encode_signature(MANIFEST, old), TrustedKeys.load([paths.public]))


def test_trust_keys_from_the_environment() -> None:
    assert trust_keys_from_env({}) == []
    assert trust_keys_from_env({"SHADOW_TRUST_KEYS": ""}) == []
    assert trust_keys_from_env({"SHADOW_TRUST_KEYS": f"/a.pub{os.pathsep}{os.pathsep}/b.pub"}) \
        == ["/a.pub", "/b.pub"]


def test_cli_keys_init_show_and_rotate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    assert main(["keys", "show", "--home", str(home)]) == 2
    assert "has no signing key" in capsys.readouterr().err

    assert main(["keys", "init", "--home", str(home), "--format", "json"]) == 0
    out, err = capsys.readouterr()
    shown = json.loads(out)
    assert err.startswith(f"created signing key {shown['key_id']} at ")
    assert shown["public_key"] == str(home / "keys" / "signing.pub")

    assert main(["keys", "show", "--home", str(home), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == shown
    assert main(["keys", "init", "--home", str(home)]) == 0
    assert "already has signing key" in capsys.readouterr().err

    assert main(["keys", "init", "--rotate", "--home", str(home), "--format", "json"]) == 0
    out, err = capsys.readouterr()
    rotated = json.loads(out)
    assert rotated["key_id"] != shown["key_id"] and rotated["retired"] == [shown["key_id"]]
    assert "rotated: new key" in err and "`shadow doctor --repair`" in err

    assert main(["keys", "show", "--home", str(home)]) == 0
    table = capsys.readouterr().out
    assert f"key_id       {rotated['key_id']}" in table and f"retired      {shown['key_id']}" in table
