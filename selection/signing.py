"""Signed manifests: who may say which model a channel serves.

A channel version's ``manifest.json`` names its model by sha256, so the
model bytes are bound to the manifest; this module binds the manifest to a
*key*. Promotion signs the manifest's exact bytes with an Ed25519 private key
that lives beside the store, and writes the signature to ``manifest.sig`` in
the version folder before the channel link swaps to it. A runtime given the
matching public key (``ChannelRuntime(trusted_keys=...)``, ``shadow serve
--trust-key``) refuses a version whose manifest is unsigned, signed by a key
it does not trust, or edited after signing; and since the signed manifest
holds the model's sha256, a swapped ``model.onnx`` is refused too. Whoever
can write the channels folder can no longer serve a model of their own: they
would need the private key.

Keys, under ``$SHADOW_HOME/keys/``::

    signing.key          the private key (PEM, PKCS#8, mode 0600; never copy it to a device)
    signing.pub          its public key (PEM): give this file to edge apps
    retired/<id>.pub     public keys replaced by ``shadow keys init --rotate``

A key id is the first 16 hex digits of the sha256 of the raw 32-byte public
key; ``manifest.sig`` names the key that signed it, so an app may trust
several keys at once (rotation: trust the old and the new public key until
every channel was signed again).

The ``cryptography`` package is imported inside the functions that need it
(about 50 ms): importing this module costs nothing on ``shadow --help``.
Standard library and ``cryptography`` only, so the slim edge runtime imports it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from selection.atomic import fsync_dir, write_bytes_atomic
from selection.errors import ConfigError, IntegrityError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

__all__ = [
    "ALGORITHM", "KEYS_DIR", "PRIVATE_KEY_FILE", "PUBLIC_KEY_FILE", "SIGNATURE_FILE",
    "TRUST_KEYS_ENV", "KeyPaths", "ManifestSignatureError", "PublicKey", "SigningKey",
    "SigningKeyError", "TrustedKeys", "describe", "encode_signature", "ensure_signing_key",
    "key_id", "load_public_key", "load_signing_key", "retired_keys", "rotate_signing_key", "sign_manifest",
    "trust_keys_from_env", "verify_manifest", "verify_version",
]

#: The one signature scheme: small keys, deterministic signatures, no parameters to get wrong.
ALGORITHM = "ed25519"
KEYS_DIR = "keys"
PRIVATE_KEY_FILE = "signing.key"
PUBLIC_KEY_FILE = "signing.pub"
RETIRED_DIR = "retired"
#: Beside ``manifest.json`` in every version folder promotion writes.
SIGNATURE_FILE = "manifest.sig"
#: Public key files an app trusts, separated by ``os.pathsep`` (``shadow serve`` reads it).
TRUST_KEYS_ENV = "SHADOW_TRUST_KEYS"

_MANIFEST = "manifest.json"  # layout.MANIFEST_FILE; spelled here so keys import no channel code


class SigningKeyError(ConfigError):
    """A key file is missing, unreadable, malformed or readable by others."""


class ManifestSignatureError(IntegrityError):
    """A manifest is unsigned, signed by an untrusted key, or does not match its signature."""


@dataclass(frozen=True)
class KeyPaths:
    """Where a home keeps its signing key pair."""

    private: Path
    public: Path
    retired: Path

    @classmethod
    def of(cls, home_root: str | Path) -> KeyPaths:
        """The key paths of the home at ``home_root`` (``Home.root``)."""
        keys = Path(home_root) / KEYS_DIR
        return cls(keys / PRIVATE_KEY_FILE, keys / PUBLIC_KEY_FILE, keys / RETIRED_DIR)

    def exists(self) -> bool:
        """Whether the home has a signing key (it then signs every version it writes)."""
        return self.private.exists()


@dataclass(frozen=True)
class PublicKey:
    """A public key an app trusts, with its id and where it came from."""

    key: Ed25519PublicKey
    key_id: str
    source: str

    def pem(self) -> bytes:
        """The key as a PEM ``PUBLIC KEY`` block (what ``signing.pub`` holds)."""
        from cryptography.hazmat.primitives import serialization

        return self.key.public_bytes(serialization.Encoding.PEM,
                                     serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True)
class SigningKey:
    """A home's private signing key."""

    key: Ed25519PrivateKey
    path: Path

    @property
    def public(self) -> PublicKey:
        """Its public half."""
        public = self.key.public_key()
        return PublicKey(public, key_id(public), str(self.path))

    @property
    def key_id(self) -> str:
        """The id ``manifest.sig`` names (see :func:`key_id`)."""
        return self.public.key_id


def key_id(public_key: Ed25519PublicKey) -> str:
    """First 16 hex digits of the sha256 of the raw 32-byte public key."""
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


# -- keys of a home ----------------------------------------------------------------------


def load_signing_key(paths: KeyPaths, *, heal: bool = True) -> SigningKey:
    """The home's private key; SigningKeyError if missing, readable by others or malformed.

    ``heal`` rewrites a missing or stale ``signing.pub``; checks that must change
    nothing (``promote --dry-run``) pass ``heal=False``.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = paths.private
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise SigningKeyError(
            f"no signing key at {path}; create one with `shadow keys init` (promotion "
            "also creates it on first use)") from None
    except OSError as exc:
        raise SigningKeyError(f"cannot read the signing key {path} ({exc.strerror}); make it a "
                              "regular file readable by this user (mode 0600)") from None
    with os.fdopen(fd, "rb") as handle:
        mode = os.fstat(handle.fileno()).st_mode
        data = handle.read()
    if os.name == "posix" and mode & 0o077:
        # As ssh does: a private key others can read is no longer private.
        raise SigningKeyError(
            f"the signing key {path} must be readable by its owner only; its mode is "
            f"{stat.S_IMODE(mode):04o}; run `chmod 600 {path}` (and rotate it with "
            "`shadow keys init --rotate` if others may have read it)")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(
            f"{path} must hold an unencrypted PEM Ed25519 private key; it does not parse "
            f"({' '.join(str(exc).split())[:120]}); restore it from a backup, or move it away "
            "and run `shadow keys init`") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{path} must hold an Ed25519 private key; it holds a "
                              f"{type(key).__name__}; move it away and run `shadow keys init`")
    if heal:
        _write_public(paths, key.public_key())  # heal a missing or stale signing.pub
    return SigningKey(key, path)


def ensure_signing_key(paths: KeyPaths) -> tuple[SigningKey, bool]:
    """Create the home's key pair unless it has one; returns the key and whether it was created.

    Safe against a concurrent creator: the private key is written whole to a
    temporary file and linked into place only if no key is there yet (the
    loser of a race loads the winner's key).
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if paths.private.exists():
        return load_signing_key(paths), False
    folder = paths.private.parent
    _make_private_folder(folder)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    # A fresh, exclusively created name per creator: threads of one process
    # share a pid, and a shared name would let one truncate what another links.
    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=f".{PRIVATE_KEY_FILE}.", suffix=".tmp")
    except OSError as exc:
        raise SigningKeyError(
            f"cannot write a new signing key in {folder} ({exc.strerror}); make the shadow home "
            "writable, or pass --home (or set SHADOW_HOME) to a folder you can write to") from None
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o600)  # whatever the umask
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, paths.private)  # fails if a key appeared meanwhile: never replace one
        except FileExistsError:
            return load_signing_key(paths), False
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(folder)
    _write_public(paths, key.public_key())
    return SigningKey(key, paths.private), True


def rotate_signing_key(paths: KeyPaths) -> tuple[SigningKey, PublicKey]:
    """Replace the home's key pair with a new one; returns the new key and the retired public key.

    The old public key is kept as ``keys/retired/<id>.pub`` (so ``shadow
    doctor`` can say a version is signed by a retired key); the old private
    key is deleted. Versions signed before stay signed by the old key until
    they are signed again (``shadow doctor --repair`` re-signs the current
    version of every channel).
    """
    old = load_signing_key(paths)
    retired = old.public
    paths.retired.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(paths.retired / f"{retired.key_id}.pub", retired.pem())
    paths.private.unlink()
    new, _ = ensure_signing_key(paths)
    return new, retired


def retired_keys(paths: KeyPaths) -> TrustedKeys:
    """The public keys this home signed with before (empty if it never rotated)."""
    files = sorted(paths.retired.glob("*.pub")) if paths.retired.is_dir() else []
    return TrustedKeys.load(files, allow_empty=True)


def load_public_key(path: str | os.PathLike[str]) -> PublicKey:
    """The Ed25519 public key in the PEM file ``path``; SigningKeyError if it is not one."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SigningKeyError(
            f"cannot read the trusted public key {path} ({exc.strerror or exc}); pass the "
            "signing.pub that `shadow keys show` names on the promoting machine") from None
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        hint = (" (that is a private key: give apps the .pub file, and rotate the key if it "
                "left its machine)" if b"PRIVATE KEY" in data else "")
        raise SigningKeyError(
            f"{path} must hold a PEM Ed25519 public key; it does not parse{hint}; pass the "
            "signing.pub that `shadow keys show` names") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(f"{path} must hold an Ed25519 public key; it holds a "
                              f"{type(key).__name__}; pass the signing.pub of a shadow home")
    return PublicKey(key, key_id(key), str(path))


# -- what an app trusts -------------------------------------------------------------------


class TrustedKeys(Mapping[str, PublicKey]):
    """The public keys an app accepts a signature from, by key id (several: rotation)."""

    def __init__(self, keys: Iterable[PublicKey]) -> None:
        self._keys = {k.key_id: k for k in keys}

    @classmethod
    def load(cls, sources: TrustedKeys | Iterable[str | os.PathLike[str] | PublicKey],
             *, allow_empty: bool = False) -> TrustedKeys:
        """Keys from PEM file paths or loaded :class:`PublicKey` objects.

        SigningKeyError if a file is not a public key, or (unless
        ``allow_empty``) if no key is given: an empty trust list would accept
        nothing and is always a mistake in the caller's configuration.
        """
        if isinstance(sources, TrustedKeys):
            keys = list(sources.values())
        else:
            keys = [s if isinstance(s, PublicKey) else load_public_key(s) for s in sources]
        if not keys and not allow_empty:
            raise SigningKeyError(
                "trusted keys must name at least one public key file; got none; pass the "
                "signing.pub that `shadow keys show` names, or leave trusted keys unset to "
                "skip signature checks")
        return cls(keys)

    def __getitem__(self, key_id: str) -> PublicKey:
        return self._keys[key_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"TrustedKeys({', '.join(self._keys)})"


def trust_keys_from_env(environ: Mapping[str, str] | None = None) -> list[str]:
    """The key files ``$SHADOW_TRUST_KEYS`` names (``os.pathsep``-separated; empty if unset)."""
    value = (os.environ if environ is None else environ).get(TRUST_KEYS_ENV, "")
    return [p for p in value.split(os.pathsep) if p.strip()]


# -- signing and verifying ----------------------------------------------------------------


def sign_manifest(manifest_bytes: bytes, key: SigningKey) -> bytes:
    """The raw 64-byte Ed25519 signature of ``manifest_bytes`` (deterministic for one key)."""
    return key.key.sign(manifest_bytes)


def encode_signature(manifest_bytes: bytes, key: SigningKey) -> bytes:
    """The ``manifest.sig`` file for ``manifest_bytes``: key id, algorithm, base64 signature.

    Deterministic (Ed25519 signatures are), so re-signing an unchanged
    manifest with the same key writes identical bytes.
    """
    document = {"algorithm": ALGORITHM, "key_id": key.key_id,
                "signature": base64.b64encode(sign_manifest(manifest_bytes, key)).decode("ascii")}
    return (json.dumps(document, sort_keys=True, indent=2) + "\n").encode("utf-8")


def verify_manifest(manifest_bytes: bytes, signature_file: bytes, keys: Mapping[str, PublicKey],
                    *, where: str = SIGNATURE_FILE) -> PublicKey:
    """Check the ``manifest.sig`` bytes ``signature_file`` against ``manifest_bytes``.

    Returns the trusted key that signed it. ManifestSignatureError (one line,
    naming ``where``) if the file is malformed, names a key not in ``keys``,
    or does not verify (the manifest was edited after signing, or forged).
    """
    from cryptography.exceptions import InvalidSignature

    fix = "promote it again (or `shadow doctor --repair`) on the machine holding the signing key"
    try:
        document = json.loads(signature_file.decode("utf-8"))
    except ValueError:
        document = None
    if not (isinstance(document, dict) and isinstance(document.get("key_id"), str)
            and isinstance(document.get("signature"), str)):
        raise ManifestSignatureError(
            f"{where} must be a JSON object with key_id, algorithm and signature; it is not; "
            f"refusing this version; {fix}")
    if document.get("algorithm") != ALGORITHM:
        raise ManifestSignatureError(
            f"{where} must be an {ALGORITHM} signature; it says {document.get('algorithm')!r}; "
            f"refusing this version; {fix}")
    signer = document["key_id"]
    trusted = keys.get(signer)
    if trusted is None:
        raise ManifestSignatureError(
            f"{where} is signed by key {signer}, which is not trusted here (trusted: "
            f"{', '.join(sorted(keys)) or 'none'}); refusing this version; give the app the "
            "public key of the home that promoted it (`shadow keys show`), or promote it again "
            "with a trusted key")
    try:
        signature = base64.b64decode(document["signature"], validate=True)
        trusted.key.verify(signature, manifest_bytes)
    except (InvalidSignature, binascii.Error, ValueError):
        raise ManifestSignatureError(
            f"the manifest beside {where} does not match its signature by key {signer} (edited "
            f"after signing, or forged); refusing this version; {fix}") from None
    return trusted


def verify_version(version_dir: Path, keys: Mapping[str, PublicKey],
                   manifest_bytes: bytes | None = None) -> PublicKey:
    """Verify the signature of the manifest in ``version_dir``; returns the key that signed it.

    ``manifest_bytes``: the manifest as the caller already read it (the
    exact bytes it will trust); read from the folder if not given.
    ManifestSignatureError if ``manifest.sig`` is missing or does not verify.
    """
    from selection.channels.layout import read_regular  # stdlib only, like this module

    sig_path = version_dir / SIGNATURE_FILE
    if manifest_bytes is None:
        manifest_bytes = read_regular(version_dir / _MANIFEST)
    try:
        signature_file = read_regular(sig_path)
    except FileNotFoundError:
        raise ManifestSignatureError(
            f"{version_dir} must hold a signed manifest ({SIGNATURE_FILE}) when trusted keys are "
            "given; it has none (unsigned: written by hand, or by a shadow without signing); "
            "refusing it; promote it again (or `shadow doctor --repair`) on the machine "
            "holding the signing key") from None
    except OSError as exc:
        raise ManifestSignatureError(
            f"{sig_path} must be a regular file readable by this user; {exc.strerror}; refusing "
            "this version; run `shadow doctor --repair`") from None
    return verify_manifest(manifest_bytes, signature_file, keys, where=str(sig_path))


# -- helpers ------------------------------------------------------------------------------


def _make_private_folder(folder: Path) -> None:
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise SigningKeyError(
            f"cannot create the keys folder {folder} ({exc.strerror}); make the shadow home "
            "writable, or pass --home (or set SHADOW_HOME) to a folder you can write to") from None


def _write_public(paths: KeyPaths, public: Ed25519PublicKey) -> None:
    """Write ``signing.pub`` unless it already holds exactly this key."""
    pem = PublicKey(public, key_id(public), str(paths.public)).pem()
    try:
        if paths.public.read_bytes() == pem:
            return
    except OSError:
        pass
    write_bytes_atomic(paths.public, pem)


def describe(paths: KeyPaths) -> dict[str, Any]:
    """What ``shadow keys show`` prints: the key id and the files, or that there is no key."""
    if not paths.exists():
        return {"key_id": None, "public_key": None, "private_key": None,
                "retired": sorted(retired_keys(paths))}
    key = load_signing_key(paths)
    return {"key_id": key.key_id, "algorithm": ALGORITHM, "public_key": str(paths.public),
            "private_key": str(paths.private), "retired": sorted(retired_keys(paths))}
