"""Who may connect to a tap or a replay (sans-I/O: headers in, refusal reason or None out).

Why this policy: on loopback an actor is a local process, so any well-formed Kalshi
signature headers (what an unmodified Kalshi client sends) or none at all are accepted; the
signature is not verified, because the tap must never need the exchange key. Beyond loopback a
shared token is required (``Authorization: Bearer <token>`` or ``?token=``), compared in constant
time. Never log the token or the headers' values.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
from collections.abc import Mapping
from urllib.parse import parse_qs, urlsplit

KALSHI_HEADERS = ("KALSHI-ACCESS-KEY", "KALSHI-ACCESS-TIMESTAMP", "KALSHI-ACCESS-SIGNATURE")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is a loopback address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def kalshi_headers_problem(headers: Mapping[str, str]) -> str | None:
    """None if the Kalshi signature headers are absent or well-formed, else what is wrong."""
    present = [h for h in KALSHI_HEADERS if headers.get(h) is not None]
    if not present:
        return None
    if len(present) != len(KALSHI_HEADERS):
        missing = ", ".join(h for h in KALSHI_HEADERS if h not in present)
        return f"incomplete Kalshi signature headers: {missing} missing (send all three or none)"
    if not headers[KALSHI_HEADERS[0]].strip():
        return "KALSHI-ACCESS-KEY is empty"
    ts = headers[KALSHI_HEADERS[1]]
    if not ts.isascii() or not ts.isdigit():
        return "KALSHI-ACCESS-TIMESTAMP must be Unix milliseconds (digits only)"
    try:
        base64.b64decode(headers[KALSHI_HEADERS[2]], validate=True)
    except (binascii.Error, ValueError):
        return "KALSHI-ACCESS-SIGNATURE is not base64"
    return None


def refusal(headers: Mapping[str, str], path: str, peer_host: str, token: str | None) -> str | None:
    """Why this handshake is refused, or None to accept it."""
    problem = kalshi_headers_problem(headers)
    if problem is not None:
        return problem
    if token is None:
        if is_loopback(peer_host):
            return None
        return "this tap serves loopback only; start it with a token to serve other hosts"
    given = None
    auth = headers.get("Authorization")
    if auth is not None and auth.startswith("Bearer "):
        given = auth[len("Bearer ") :]
    else:
        q = parse_qs(urlsplit(path).query).get("token")
        given = q[0] if q else None
    if is_loopback(peer_host) and given is None:
        return None
    if given is None or not hmac.compare_digest(given.encode(), token.encode()):
        return "a valid token is required: send 'Authorization: Bearer <token>' or ?token="
    return None
