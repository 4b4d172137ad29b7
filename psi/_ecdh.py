"""X25519 primitives for ECDH-PSI: hash-to-curve, blinding, point checks, session derivation.

Hash-to-curve
-------------
An ID ``x`` is mapped to ``u = SHA-256(HASH_TAG || salt || utf8(x))`` with the top bit cleared,
read as a little-endian X25519 u-coordinate (RFC 7748). About half of all u-coordinates lie on
the twist of Curve25519 rather than on the curve; the X25519 ladder is well defined on both and
Curve25519 is twist-secure (the twist's order is 4 times a 253-bit prime), and libsodium's
scalar clamping (a multiple of 8) removes the small-order component on either. Commutativity
``X25519(a, X25519(b, u)) == X25519(b, X25519(a, u))`` therefore holds for every ``u``.
This map costs one SHA-256 (about 0.3 µs). RFC 9380 Elligator 2
(``curve25519_XMD:SHA-512_ELL2_NU_``, about 7 µs) maps to the curve proper and is a later option;
changing the map changes :data:`SUITE`.

The tag and the 32-byte salt have fixed lengths, so ``tag || salt || id`` is unambiguous.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence

import nacl.bindings
import nacl.exceptions
import numpy as np

from protocols.errors import RemoteProtocolError

SUITE = "ecdh-x25519-sha256-u/v1"
POINT_BYTES = 32
SCALAR_BYTES = 32
NONCE_BYTES = 16
HASH_TAG = b"vfl-he/psi/" + SUITE.encode("ascii") + b"/hash-to-u\x00"
_SALT_TAG = b"vfl-he/psi/" + SUITE.encode("ascii") + b"/salt\x00"
_SESSION_TAG = b"vfl-he/psi/" + SUITE.encode("ascii") + b"/session-id\x00"


class LowOrderPointError(Exception):
    """Internal: X25519 gave the all-zero output (the input point has small order)."""


def new_scalar() -> bytes:
    """A fresh secret X25519 scalar (libsodium clamps it on use)."""
    return secrets.token_bytes(SCALAR_BYTES)


def new_nonce() -> bytes:
    """A fresh session nonce (each party contributes one)."""
    return secrets.token_bytes(NONCE_BYTES)


def derive_session(initiator_nonce: bytes, responder_nonce: bytes) -> tuple[bytes, bytes]:
    """Session id (16 bytes) and hash salt (32 bytes) from both parties' nonces, in role order."""
    both = initiator_nonce + responder_nonce
    session_id = hashlib.sha256(_SESSION_TAG + both).digest()[:16]
    salt = hashlib.sha256(_SALT_TAG + both).digest()
    return session_id, salt


def hash_to_points(ids: Sequence[str], salt: bytes) -> list[bytes]:
    """Map each ID to a 32-byte X25519 u-coordinate (see the module docstring)."""
    prefix = hashlib.sha256(HASH_TAG + salt)
    points = []
    for item in ids:
        h = prefix.copy()
        h.update(item.encode("utf-8"))
        digest = h.digest()
        points.append(digest[:31] + bytes((digest[31] & 0x7F,)))
    return points


def blind(scalar: bytes, points: Sequence[bytes]) -> list[bytes]:
    """``X25519(scalar, p)`` for every point; raises :class:`LowOrderPointError`.

    Callers must have checked that every point is exactly 32 bytes (libsodium reads 32 bytes
    whatever the buffer's length).
    """
    mult = nacl.bindings.crypto_scalarmult
    out = []
    try:
        for point in points:
            out.append(mult(scalar, point))
    except nacl.exceptions.CryptoError:
        raise LowOrderPointError from None
    return out


def pack(points: Sequence[bytes]) -> bytes:
    """Concatenate 32-byte points into one blob."""
    return b"".join(points)


def unpack(blob: bytes, expected_count: int, what: str) -> list[bytes]:
    """Split a blob into canonical 32-byte points; raises :class:`RemoteProtocolError`.

    Rejects a length that is not ``32 * expected_count`` and non-canonical encodings (top bit set,
    or ``u >= 2^255 - 19``). libsodium never outputs those, so an honest peer never sends them.
    """
    if len(blob) != POINT_BYTES * expected_count:
        raise RemoteProtocolError(
            f"{what}: expected {expected_count} points ({POINT_BYTES * expected_count} bytes), "
            f"got {len(blob)} bytes"
        )
    if expected_count == 0:
        return []
    arr = np.frombuffer(blob, dtype=np.uint8).reshape(expected_count, POINT_BYTES)
    top = arr[:, 31]
    non_canonical = (top >= 0x80) | (
        (top == 0x7F) & (arr[:, 1:31] == 0xFF).all(axis=1) & (arr[:, 0] >= 0xED)
    )
    if non_canonical.any():
        raise RemoteProtocolError(
            f"{what}: {int(non_canonical.sum())} non-canonical point encoding(s)"
        )
    return [blob[i : i + POINT_BYTES] for i in range(0, len(blob), POINT_BYTES)]
