"""Kalshi request signing (RSA-PSS over ``timestamp_ms + METHOD + path``).

The key is loaded once and kept only as a ``cryptography`` key object; it is never formatted into a
message, a record or an exception (secrets stay secret: ARCHITECTURE.md, Invariants). Errors name
the file and what to do about it.
"""

from __future__ import annotations

import base64
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

WS_PATH = "/trade-api/ws/v2"


class KeyError_(Exception):
    """A private key problem a person can fix; the message says how (and never shows the key)."""


def load_private_key(path: Path) -> rsa.RSAPrivateKey:
    """Load a PEM RSA key (PKCS#1 or PKCS#8), refusing files others can read."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise KeyError_(
            f"private key file {path} does not exist; set KALSHI_PRIVATE_KEY_PATH or "
            "--private-key to the PEM file downloaded when the API key was created"
        ) from None
    except PermissionError:
        raise KeyError_(
            f"private key file {path} is not readable by this user; fix its owner"
        ) from None
    if stat.S_ISDIR(st.st_mode):
        raise KeyError_(f"private key path {path} is a directory; point it at the PEM file")
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyError_(f"private key file {path} is readable by others; chmod 600 it")
    try:
        data = path.read_bytes()
    except PermissionError:
        raise KeyError_(
            f"private key file {path} is not readable by this user; fix its owner"
        ) from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # Deliberately no "from exc": the parser's message could quote key material.
        raise KeyError_(
            f"private key file {path} is not an unencrypted PEM RSA private key; "
            "download the key again from Kalshi's API keys page"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KeyError_(f"private key file {path} is not an RSA key; Kalshi API keys are RSA")
    return key


@dataclass(frozen=True)
class Signer:
    """Builds the three KALSHI-ACCESS-* headers; re-sign on every (re)connect (fresh timestamp)."""

    key_id: str
    key: rsa.RSAPrivateKey = field(repr=False)

    def sign(self, ts_ms: str, method: str, path: str) -> str:
        msg = (ts_ms + method.upper() + path.split("?", 1)[0]).encode()
        sig = self.key.sign(
            msg,
            padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH),
            hashes.SHA256(),
        )
        return base64.b64encode(sig).decode("ascii")

    def headers(self, method: str, path: str, now_ms: int | None = None) -> dict[str, str]:
        ts = str(now_ms if now_ms is not None else int(time.time() * 1000))
        return {
            "KALSHI-ACCESS-KEY": self.key_id,
            "KALSHI-ACCESS-TIMESTAMP": ts,
            "KALSHI-ACCESS-SIGNATURE": self.sign(ts, method, path),
        }


def signer_from(key_id: str | None, key_path: str | os.PathLike[str] | None) -> Signer:
    """Build a signer from settings, with actionable errors for what is missing."""
    if not key_id:
        raise KeyError_("no API key id; set KALSHI_API_KEY_ID or --key-id")
    if not key_path:
        raise KeyError_("no private key file; set KALSHI_PRIVATE_KEY_PATH or --private-key")
    return Signer(key_id=key_id, key=load_private_key(Path(key_path).expanduser()))
