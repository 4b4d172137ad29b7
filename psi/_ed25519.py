"""Prime-order group primitives on Ed25519 (libsodium through PyNaCl), for protocols that need
scalar inversion: the N-party PSI's one-time masks and the unbalanced mode's OPRF.

X25519 (``psi._ecdh``) is faster but clamps scalars, so a blinding there cannot be undone.
Here every point lies in the prime-order subgroup of Ed25519 (order ``L = 2^252 + ...``):

* hash to the group: ``crypto_core_ed25519_from_uniform(SHA-512(tag || salt || id)[:32])``,
  libsodium's Elligator 2 map followed by cofactor clearing (so the output has order ``L``);
* scalars are uniform modulo ``L`` (``crypto_core_ed25519_scalar_reduce`` of 64 random bytes),
  used without clamping, and invertible;
* every point received from a peer is checked with ``crypto_core_ed25519_is_valid_point``
  (canonical encoding, on the curve, in the prime-order subgroup, not of small order), so a
  peer cannot learn a scalar's residue modulo the cofactor.

Points travel as blobs of 32-byte compressed encodings.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable

import nacl.bindings as sodium
import nacl.exceptions

from protocols.errors import RemoteProtocolError

__all__ = [
    "POINT_BYTES",
    "SCALAR_BYTES",
    "hash_to_group",
    "new_scalar",
    "invert",
    "multiply_scalars",
    "scalar_mult",
    "validate_points",
]

POINT_BYTES = sodium.crypto_core_ed25519_BYTES
SCALAR_BYTES = sodium.crypto_core_ed25519_SCALARBYTES
_HASH_TAG = b"vfl-he/psi/ed25519-elligator2-sha512/v1\x00"


def new_scalar() -> bytes:
    """A uniform non-zero scalar modulo the group order, from :mod:`secrets`."""
    while True:
        scalar = sodium.crypto_core_ed25519_scalar_reduce(secrets.token_bytes(64))
        if any(scalar):
            return scalar


def invert(scalar: bytes) -> bytes:
    """The inverse of a non-zero scalar modulo the group order."""
    return sodium.crypto_core_ed25519_scalar_invert(scalar)


def multiply_scalars(a: bytes, b: bytes) -> bytes:
    """``a * b`` modulo the group order."""
    return sodium.crypto_core_ed25519_scalar_mul(a, b)


def hash_to_group(ids: Iterable[bytes], salt: bytes) -> bytes:
    """Blob of group elements for byte-string IDs (``salt`` is a fixed 32 bytes or empty)."""
    prefix = hashlib.sha512(_HASH_TAG + len(salt).to_bytes(1, "big") + salt)
    from_uniform = sodium.crypto_core_ed25519_from_uniform
    out = []
    for item in ids:
        h = prefix.copy()
        h.update(item)
        out.append(from_uniform(h.digest()[:32]))
    return b"".join(out)


def scalar_mult(scalar: bytes, blob: bytes) -> bytes:
    """``scalar * P`` for every point of ``blob`` (the points must have been validated)."""
    mult = sodium.crypto_scalarmult_ed25519_noclamp
    try:
        return b"".join(
            mult(scalar, blob[i : i + POINT_BYTES]) for i in range(0, len(blob), POINT_BYTES)
        )
    except nacl.exceptions.RuntimeError:
        raise RemoteProtocolError("a point multiplied to the identity") from None


def validate_points(blob: bytes, expected_count: int, what: str) -> None:
    """Raise :class:`RemoteProtocolError` unless ``blob`` holds ``expected_count`` valid points."""
    if len(blob) != POINT_BYTES * expected_count:
        raise RemoteProtocolError(
            f"{what}: expected {expected_count} points ({POINT_BYTES * expected_count} bytes), "
            f"got {len(blob)} bytes"
        )
    is_valid = sodium.crypto_core_ed25519_is_valid_point
    for i in range(0, len(blob), POINT_BYTES):
        if not is_valid(blob[i : i + POINT_BYTES]):
            raise RemoteProtocolError(
                f"{what}: point {i // POINT_BYTES} is not a valid group element"
            )
