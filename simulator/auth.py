"""Test API keys and RSA-PSS handshake verification, the way the exchange checks them.

A client must use the same code path against the simulator as against Kalshi, so the simulator
issues a real RSA key pair (PKCS#8 private key, UUID key id) and verifies the three
``KALSHI-ACCESS-*`` headers exactly as docs/protocol.md §2 describes: signature over
``timestamp_ms + METHOD + path`` (query stripped), RSA-PSS / SHA-256 / MGF1(SHA-256) / salt =
digest length. PSS is randomized, so signatures are checked by verification, never by comparison.

Everything here is pure: no sockets; the clock is passed in.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

PRIVATE_KEY_FILE = "private_key.pem"
KEY_ID_FILE = "key_id"
REGISTRY_FILE = "public_keys.json"

_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)


@dataclass(frozen=True)
class KeyMaterial:
    """Where a client finds its credentials, and what the server trusts."""

    key_id: str
    private_key_path: Path
    public_keys: Mapping[str, rsa.RSAPublicKey]


class AuthError(Exception):
    """A rejected request: HTTP status plus the exchange-style JSON error body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> bytes:
        return json.dumps({"code": self.code, "message": self.message}).encode()


def generate_keys(keys_dir: Path, *, key_size: int = 2048) -> KeyMaterial:
    """Create a fresh key pair in ``keys_dir`` and add it to the registry there.

    The private key is written 0600 before any byte of it lands on disk (``os.open`` with the
    mode), because a briefly world-readable key is still a leaked key.
    """
    keys_dir.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    key_id = str(uuid.uuid4())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    priv_path = keys_dir / PRIVATE_KEY_FILE
    tmp = keys_dir / (PRIVATE_KEY_FILE + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.chmod(tmp, 0o600)
    os.replace(tmp, priv_path)
    (keys_dir / KEY_ID_FILE).write_text(key_id + "\n")
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    registry_path = keys_dir / REGISTRY_FILE
    registry: dict[str, str] = {}
    if registry_path.exists():
        registry = json.loads(registry_path.read_text())
    registry[key_id] = public_pem
    registry_path.write_text(json.dumps(registry, indent=2) + "\n")
    return load_keys(keys_dir)


def load_keys(keys_dir: Path) -> KeyMaterial:
    """Load the registry and the client's key id from ``keys_dir``."""
    registry_path = keys_dir / REGISTRY_FILE
    try:
        raw = json.loads(registry_path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no key registry at {registry_path}; run `python -m simulator keygen "
            f"--keys-dir {keys_dir}` or start the server with --keys-dir to create one"
        ) from None
    public_keys: dict[str, rsa.RSAPublicKey] = {}
    for kid, pem in raw.items():
        pub = serialization.load_pem_public_key(pem.encode())
        if not isinstance(pub, rsa.RSAPublicKey):
            raise ValueError(f"{registry_path}: key {kid} is not an RSA public key")
        public_keys[kid] = pub
    key_id = (keys_dir / KEY_ID_FILE).read_text().strip()
    return KeyMaterial(key_id, keys_dir / PRIVATE_KEY_FILE, public_keys)


def load_or_create_keys(keys_dir: Path) -> KeyMaterial:
    """Reuse the keys in ``keys_dir`` if complete, otherwise create them."""
    if all((keys_dir / n).exists() for n in (PRIVATE_KEY_FILE, KEY_ID_FILE, REGISTRY_FILE)):
        return load_keys(keys_dir)
    return generate_keys(keys_dir)


def sign(private_key: rsa.RSAPrivateKey, ts_ms: str, method: str, path: str) -> str:
    """Client-side signature (used by tests and the bench; the server only verifies)."""
    msg = (ts_ms + method.upper() + path.split("?", 1)[0]).encode()
    return base64.b64encode(private_key.sign(msg, _PSS, hashes.SHA256())).decode("ascii")


def verify_request(
    public_keys: Mapping[str, rsa.RSAPublicKey],
    headers: Mapping[str, str],
    method: str,
    path: str,
    now_ms: int,
    max_skew_ms: int,
) -> str:
    """Return the key id if the signed headers are valid, else raise :class:`AuthError`.

    ``headers`` lookups must be case-insensitive (websockets' ``Headers`` is).
    """
    key_id = headers.get("KALSHI-ACCESS-KEY")
    ts = headers.get("KALSHI-ACCESS-TIMESTAMP")
    sig = headers.get("KALSHI-ACCESS-SIGNATURE")
    if not key_id or not ts or not sig:
        missing = [
            n
            for n, v in (
                ("KALSHI-ACCESS-KEY", key_id),
                ("KALSHI-ACCESS-TIMESTAMP", ts),
                ("KALSHI-ACCESS-SIGNATURE", sig),
            )
            if not v
        ]
        raise AuthError(401, "authentication_error", f"missing header(s): {', '.join(missing)}")
    pub = public_keys.get(key_id)
    if pub is None:
        raise AuthError(401, "authentication_error", "unknown API key id")
    try:
        ts_val = int(ts)
    except ValueError:
        raise AuthError(
            401, "authentication_error", "KALSHI-ACCESS-TIMESTAMP must be Unix milliseconds"
        ) from None
    if abs(now_ms - ts_val) > max_skew_ms:
        raise AuthError(
            401,
            "authentication_error",
            "request timestamp outside the allowed window; check the client clock",
        )
    try:
        raw = base64.b64decode(sig, validate=True)
    except (binascii.Error, ValueError):
        raise AuthError(401, "authentication_error", "signature is not valid base64") from None
    msg = (ts + method.upper() + path.split("?", 1)[0]).encode()
    try:
        pub.verify(raw, msg, _PSS, hashes.SHA256())
    except InvalidSignature:
        raise AuthError(401, "authentication_error", "invalid signature") from None
    return key_id
