"""X25519 primitives for ECDH-PSI: hash-to-curve, blinding, point checks, session derivation.

Everything here works on *blobs*: one ``bytes`` object of concatenated 32-byte X25519
u-coordinates (little-endian, RFC 7748), viewed with NumPy where a check or a match runs over
all points at once. IDs are handed over as one UTF-8 blob plus an ``int64`` offsets array.

Hash-to-curve
-------------
Two maps, chosen with ``hash_to_curve``; each has its own suite name (:data:`SUITES`) that the
parties compare in their hellos, and its own domain-separation tags.

``"sha256"`` (default, suite ``ecdh-x25519-sha256-u/v1``)
    ``u = SHA-256(HASH_TAG || salt || utf8(x))`` with bit 255 cleared, read as a little-endian
    u-coordinate. About half of all u-coordinates lie on the twist of Curve25519 rather than on
    the curve; the X25519 ladder is well defined on both, Curve25519 is twist-secure (the
    twist's order is 4 times a 253-bit prime), and libsodium's scalar clamping (a multiple of 8)
    removes the small-order component on either. Commutativity
    ``X25519(a, X25519(b, u)) == X25519(b, X25519(a, u))`` therefore holds for every ``u``.
    The hash is thus not onto a prime-order group: an item's blinded value lives in the curve's
    or the twist's prime-order subgroup, which reveals one bit (curve or twist) per point about
    ``H(x)``, a pseudo-random bit unrelated to the ID without the salt and scalars. Cost: one
    SHA-256, about 0.5 µs.

``"elligator2"`` (suite ``ecdh-x25519-ell2-ed25519-sha512/v1``)
    ``e = crypto_core_ed25519_from_uniform(SHA-512(ELL2_HASH_TAG || salt || utf8(x))[:32])``,
    libsodium's Elligator 2 map onto Ed25519 followed by cofactor clearing, so ``e`` lies in the
    prime-order subgroup of the curve proper; then the birational map ``u = (1 + y) / (1 - y)``
    gives its X25519 u-coordinate (what ``crypto_sign_ed25519_pk_to_curve25519`` computes, but
    without that function's subgroup check, which costs as much as a scalar multiplication and
    is redundant after cofactor clearing). Cost: about 25 µs per ID.

    Relation to RFC 9380: this is the same map family (Elligator 2 on the curve25519 /
    edwards25519 pair, ``Z = 2``, cofactor cleared by 8) as the suites
    ``curve25519_XMD:SHA-512_ELL2_NU_`` and ``..._RO_``, but it is **not** either suite: the
    field element comes from the first 32 bytes of one SHA-512 digest as libsodium's
    ``from_uniform`` interprets them (not ``hash_to_field`` with ``expand_message_xmd``), the
    sign convention is libsodium's, and there is a single map evaluation (like ``_NU_``, not the
    two-point sum of ``_RO_``). Outputs therefore differ from RFC 9380 test vectors.

The tags and the 32-byte salt have fixed lengths, so ``tag || salt || id`` is unambiguous.

Point checks
------------
Every point from a peer must be exactly 32 bytes, canonical (bit 255 clear and ``u < 2^255 - 19``;
libsodium never outputs anything else) and not one of the small-order u-coordinates of
Curve25519 or its twist (libsodium's list: 0, 1, the two order-8 points, ``p - 1``; the other two
entries, ``p`` and ``p + 1``, are non-canonical). Multiplying a small-order point by a clamped
scalar gives the all-zero output, which libsodium refuses as well.
"""

from __future__ import annotations

import hashlib
import itertools
import secrets
from collections.abc import Sequence

import nacl.bindings
import nacl.exceptions
import numpy as np

from protocols.errors import RemoteProtocolError

__all__ = [
    "HASH_TO_CURVE",
    "POINT_BYTES",
    "SUITE",
    "SUITES",
    "LowOrderPointError",
    "derive_session",
    "hash_blob_to_points",
    "multiply_blob",
]

SUITES: dict[str, str] = {
    "sha256": "ecdh-x25519-sha256-u/v1",
    "elligator2": "ecdh-x25519-ell2-ed25519-sha512/v1",
}
"""Suite name (sent in the hellos) of each ``hash_to_curve`` option."""

HASH_TO_CURVE = tuple(SUITES)
"""The accepted values of ``hash_to_curve``."""

SUITE = SUITES["sha256"]
"""The default suite."""

POINT_BYTES = 32
SCALAR_BYTES = 32
NONCE_BYTES = 16
FIELD_PRIME = 2**255 - 19


def _tag(suite: str, purpose: str) -> bytes:
    return b"vfl-he/psi/" + suite.encode("ascii") + b"/" + purpose.encode("ascii") + b"\x00"


HASH_TAG = _tag(SUITES["sha256"], "hash-to-u")
ELL2_HASH_TAG = _tag(SUITES["elligator2"], "hash-to-curve")

# Small-order u-coordinates (canonical ones) from libsodium's x25519_ref10.c blocklist.
SMALL_ORDER_POINTS = (
    bytes(32),
    (1).to_bytes(32, "little"),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    (FIELD_PRIME - 1).to_bytes(32, "little"),
)
_SMALL_ORDER = np.frombuffer(b"".join(SMALL_ORDER_POINTS), dtype="S32")

try:  # Direct cffi calls into PyNaCl's libsodium: ~1 µs less per multiplication.
    from nacl._sodium import ffi as _ffi
    from nacl._sodium import lib as _lib
except ImportError:  # pragma: no cover - layout of another PyNaCl version
    _ffi = _lib = None


class LowOrderPointError(Exception):
    """Internal: X25519 gave the all-zero output (the input point has small order)."""


def new_scalar() -> bytes:
    """A fresh secret X25519 scalar (libsodium clamps it on use)."""
    return secrets.token_bytes(SCALAR_BYTES)


def new_nonce() -> bytes:
    """A fresh session nonce (each party contributes one)."""
    return secrets.token_bytes(NONCE_BYTES)


def suite_for(hash_to_curve: str) -> str:
    """The suite name of a ``hash_to_curve`` option; raises ``KeyError`` if unknown."""
    return SUITES[hash_to_curve]


def derive_session(
    initiator_nonce: bytes, responder_nonce: bytes, context: bytes = b""
) -> tuple[bytes, bytes]:
    """Session id (16 bytes) and hash salt (32 bytes) from both parties' nonces, in role order.

    ``context`` binds the parameters both hellos agree on (suite, reveal mode, chunking), so two
    parties that disagree on them derive different session ids and stop at the hello.
    """
    both = initiator_nonce + responder_nonce + context
    session_id = hashlib.sha256(_tag(SUITE, "session-id") + both).digest()[:16]
    salt = hashlib.sha256(_tag(SUITE, "salt") + both).digest()
    return session_id, salt


# -- IDs as one blob --------------------------------------------------------------------------
def encode_ids(ids: Sequence[str] | np.ndarray) -> tuple[bytes, np.ndarray]:
    """UTF-8 blob of ``ids`` and ``int64`` offsets (``len(ids) + 1``); raises ``UnicodeError``."""
    parts = []
    lengths = np.empty(len(ids), dtype=np.int64)
    step = 1 << 16  # bounded transient list of bytes objects
    for start in range(0, len(ids), step):
        encoded = [item.encode("utf-8") for item in ids[start : start + step]]
        lengths[start : start + len(encoded)] = np.fromiter(
            map(len, encoded), dtype=np.int64, count=len(encoded)
        )
        parts.append(b"".join(encoded))
    offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return b"".join(parts), offsets


# -- worker-side computations (deterministic; called in pool processes) ------------------------
def hash_blob_to_points(
    hash_to_curve: str, salt: bytes, id_blob: bytes, offsets: np.ndarray
) -> bytes:
    """Blob of u-coordinates for the IDs ``id_blob[offsets[i]:offsets[i + 1]]``.

    ``offsets`` are relative to ``id_blob``. See the module docstring for the two maps.
    """
    view = memoryview(id_blob)
    bounds: list[int] = offsets.tolist()
    if hash_to_curve == "sha256":
        prefix = hashlib.sha256(HASH_TAG + salt)
        digests = []
        for start, end in itertools.pairwise(bounds):
            h = prefix.copy()
            h.update(view[start:end])
            digests.append(h.digest())
        out = np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(-1, POINT_BYTES).copy()
        out[:, 31] &= 0x7F
        return out.tobytes()
    if hash_to_curve == "elligator2":
        prefix = hashlib.sha512(ELL2_HASH_TAG + salt)
        from_uniform = nacl.bindings.crypto_core_ed25519_from_uniform
        mask, p = (1 << 255) - 1, FIELD_PRIME
        points = []
        for start, end in itertools.pairwise(bounds):
            h = prefix.copy()
            h.update(view[start:end])
            y = int.from_bytes(from_uniform(h.digest()[:32]), "little") & mask
            # y == 1 is the identity (probability ~2^-252): u = 0, rejected by the multiplication.
            u = (1 + y) * pow(1 - y, -1, p) % p if y != 1 else 0
            points.append(u.to_bytes(POINT_BYTES, "little"))
        return b"".join(points)
    raise ValueError(f"unknown hash_to_curve {hash_to_curve!r}")


def multiply_blob(scalar: bytes, blob: bytes) -> bytes:
    """``X25519(scalar, p)`` for each 32-byte point of ``blob``; raises :class:`LowOrderPointError`.

    Callers must have checked the blob's length (libsodium reads 32 bytes per point).
    """
    if len(scalar) != SCALAR_BYTES or len(blob) % POINT_BYTES:
        raise ValueError("scalar must be 32 bytes and the blob a whole number of points")
    if _lib is None:  # pragma: no cover
        mult = nacl.bindings.crypto_scalarmult
        try:
            return b"".join(
                mult(scalar, blob[i : i + POINT_BYTES]) for i in range(0, len(blob), POINT_BYTES)
            )
        except nacl.exceptions.CryptoError:
            raise LowOrderPointError from None
    out = _ffi.new("unsigned char[]", max(1, len(blob)))
    src = _ffi.from_buffer(blob)
    f = _lib.crypto_scalarmult
    for i in range(0, len(blob), POINT_BYTES):
        if f(out + i, scalar, src + i) != 0:
            raise LowOrderPointError
    return _ffi.buffer(out, len(blob))[:]


# -- parent-side checks and matching ------------------------------------------------------------
def check_points(blob: bytes, expected_count: int, what: str) -> np.ndarray:
    """Validate a peer's blob of points; returns it as an ``S32`` array (no copy).

    Raises
    ------
    RemoteProtocolError
        Wrong length, a non-canonical encoding, or a small-order point.
    """
    if len(blob) != POINT_BYTES * expected_count:
        raise RemoteProtocolError(
            f"{what}: expected {expected_count} points ({POINT_BYTES * expected_count} bytes), "
            f"got {len(blob)} bytes"
        )
    if expected_count == 0:
        return np.empty(0, dtype="S32")
    arr = np.frombuffer(blob, dtype=np.uint8).reshape(expected_count, POINT_BYTES)
    top = arr[:, 31]
    non_canonical = (top >= 0x80) | (
        (top == 0x7F) & (arr[:, 1:31] == 0xFF).all(axis=1) & (arr[:, 0] >= 0xED)
    )
    if non_canonical.any():
        raise RemoteProtocolError(
            f"{what}: {int(non_canonical.sum())} non-canonical point encoding(s)"
        )
    points = np.frombuffer(blob, dtype="S32")
    if np.isin(points, _SMALL_ORDER).any():
        raise RemoteProtocolError(f"{what}: a point of small order was rejected")
    return points


def sorted_distinct(points: np.ndarray, what: str) -> np.ndarray:
    """``points`` (``S32``) sorted; raises :class:`RemoteProtocolError` if a value repeats."""
    ordered = np.sort(points)
    if (ordered[1:] == ordered[:-1]).any():
        raise RemoteProtocolError(f"{what}: repeated points")
    return ordered


def has_repeats(points: np.ndarray) -> bool:
    """Whether an ``S32`` array holds a value twice (sort-based, no Python object per point).

    Sorts the first 8 bytes of each value as integers; only if two of those are equal
    (probability about ``n^2 / 2^65`` for random points) does it sort the full values.
    """
    if points.size < 2:
        return False
    prefixes = np.sort(np.ascontiguousarray(points).view("<u8")[::4])
    if not (prefixes[1:] == prefixes[:-1]).any():
        return False
    ordered = np.sort(points)
    return bool((ordered[1:] == ordered[:-1]).any())


def _prefixes(points: np.ndarray) -> np.ndarray:
    """First 8 bytes of each point as a big-endian integer (same order as bytes)."""
    raw = np.frombuffer(points.tobytes(), dtype=">u8").reshape(-1, 4)
    return raw[:, 0].astype(np.uint64)


def isin_points(own: np.ndarray, peer: np.ndarray, *, peer_sorted: bool = False) -> np.ndarray:
    """Boolean mask: which of ``own`` (``S32``) occur in ``peer`` (``S32``, distinct values).

    Exact. Fast path: search the 64-bit prefixes of the sorted peer values, then compare the
    full 32 bytes of each candidate; if two peer values share a prefix (probability about
    ``m^2 / 2^65``) it falls back to :func:`numpy.isin`. Pass ``peer_sorted=True`` if ``peer``
    is already sorted.
    """
    if own.size == 0 or peer.size == 0:
        return np.zeros(own.size, dtype=bool)
    peer_sorted_values = peer if peer_sorted else np.sort(peer)
    return _isin_sorted(own, peer_sorted_values)


def _isin_sorted(own: np.ndarray, peer_sorted: np.ndarray) -> np.ndarray:
    peer_prefix = _prefixes(peer_sorted)
    if (peer_prefix[1:] == peer_prefix[:-1]).any():
        return np.isin(own, peer_sorted)
    idx = np.searchsorted(peer_prefix, _prefixes(own))
    idx[idx == peer_sorted.size] = 0
    return peer_sorted[idx] == own


def permutation(n: int) -> np.ndarray:
    """A uniformly random permutation of ``range(n)`` from :mod:`secrets` (``int64``).

    It sorts ``n`` fresh 64-bit values from the OS's CSPRNG; a draw with a tie is redrawn, so
    the permutation is exactly uniform. About 0.1 s for 10^6 items.
    """
    while True:
        keys = np.frombuffer(secrets.token_bytes(8 * n), dtype=np.uint64)
        order = np.argsort(keys, kind="stable")
        ordered = keys[order]
        if not (ordered[1:] == ordered[:-1]).any():
            return order.astype(np.int64)


# -- compatibility helpers (lists of points) ----------------------------------------------------
def hash_to_points(ids: Sequence[str], salt: bytes, hash_to_curve: str = "sha256") -> list[bytes]:
    """Map each ID to a 32-byte X25519 u-coordinate (see the module docstring)."""
    blob, offsets = encode_ids(ids)
    out = hash_blob_to_points(hash_to_curve, salt, blob, offsets)
    return [out[i : i + POINT_BYTES] for i in range(0, len(out), POINT_BYTES)]


def blind(scalar: bytes, points: Sequence[bytes]) -> list[bytes]:
    """``X25519(scalar, p)`` for every point; raises :class:`LowOrderPointError`."""
    out = multiply_blob(scalar, b"".join(points))
    return [out[i : i + POINT_BYTES] for i in range(0, len(out), POINT_BYTES)]
