"""Paillier backend: phe-compatible keys, gmpy2 arithmetic, fixed-point encoding.

Choices and why:

* **Generator g = n + 1**, so ``g^m = 1 + m n mod n^2`` and ``(1 + m n) r = r + n (m r mod n)``
  costs a fraction of one multiplication modulo ``n^2``; keys remain valid ``phe`` keys (``phe``
  uses the same generator) and our ciphertexts are ``phe`` ciphertexts: see
  :meth:`PaillierPublicKey.to_phe`.
* **Randomness** ``r^n`` is replaced by ``h_s^a`` with ``h = -x^2 mod n``, ``h_s = h^n mod n^2``
  and a fresh ``a`` of ``key_bits / 2`` bits from :mod:`secrets` (Damgård, Jurik and Nielsen,
  "A generalization of Paillier's public-key system with applications to electronic voting",
  Int. J. Inf. Secur. 9, 2010, sect. 4.2; the same exponent length as SecretFlow's HEU). This
  needs ``p = q = 3 mod 4``, so keys are generated here. ``h_s^a`` comes from a fixed-base table
  (8-bit windows, widened to 13 bits once a key has made enough values: 79 multiplications per
  encryption for a 2048-bit key); see :mod:`protocols._paillier_pool`.
* **Precomputed randomness**: :meth:`PaillierPublicKey.precompute_randomness` fills a store
  (in worker processes when ``n_jobs > 1``) that ``encrypt``, ``mask`` and ``rerandomize``
  consume, each value exactly once; when the store is empty they compute inline.
* **One public fixed-point exponent** for every value of a vector (``scale_bits``): values are
  ``round(v * 2^scale_bits) mod n``; phe's per-value exponents would leak magnitudes. Inputs to
  :meth:`~PaillierPublicKey.encrypt` must be below ``2^INPUT_BITS`` in magnitude, so every
  vector carries a *public* bound on its values (derived from that limit and the operations
  applied, never from the data); anything that would leave the fixed-point range raises
  ``ParameterError`` or, at decryption, ``DecryptionError``: never a silent wrap-around.
* **Decryption by CRT** modulo ``p^2`` and ``q^2``.
* ``X^T [[d]]`` by multi-exponentiation (:mod:`protocols._multiexp`) with positive and negative
  multipliers accumulated separately, column by column over the process pool.

Masks and packing (what the coordinator decrypts)
-------------------------------------------------
:meth:`~PaillierPublicKey.mask` packs a vector into as few plaintexts as its public bound
allows. With values ``|v| < 2^B`` (``B`` the vector's bound in fixed-point units), a slot has
``S = B + 2 + MASK_HIDING_BITS`` bits and holds ``v + 2^B + r`` with ``r`` uniform in
``[0, 2^(S-1))``; ``L = floor((key_bits - 1) / S)`` slots fill one plaintext, slot ``j`` at bits
``[j S, (j + 1) S)``::

    P = sum_j (v_j + 2^B + r_j) * 2^(j S)          with 0 <= v_j + 2^B < 2^(B+1)

Each slot is below ``2^(B+1) + 2^(S-1) <= 2^S``, so slots never carry into each other, and
``P < 2^(key_bits - 1) <= n`` decrypts exactly. ``[[P]]`` is computed as the Horner product
``prod_j [[v_j]]^(2^(j S))`` times a fresh encryption of ``sum_j (2^B + r_j) 2^(j S)``.
**Statistical hiding**: for any two values of a slot the distributions of ``v + 2^B + r`` are at
statistical distance at most ``2^(B+1) / 2^(S-1) = 2^-MASK_HIDING_BITS = 2^-40``; a vector of
``k`` values is hidden up to ``k * 2^-40``. For the gradient of a 2048-bit key and batches of
about 1000 rows, ``B = 145`` and ``S = 187``: 10 values per plaintext. When packing saves
nothing (one value, or a bound too wide), the mask is uniform in ``Z_n`` (perfect hiding).

The bound a party packs with is public: fresh encryptions ``INPUT_BITS`` above their scale,
``SUM_HEADROOM_BITS`` more for a received fresh vector (a sum of up to 256 fresh encryptions),
plus ``29 + PLAIN_SCALE_BITS`` bits for any plaintext multiplier and ``log2(rows)`` for a column
sum. Like the rest of the protocol this assumes semi-honest peers: a party that sends a residual
outside the public range can make packed slots overflow, so that the coordinator sees more than
the hiding bound allows; :meth:`~PaillierPublicKey.unmask` then raises ``RemoteProtocolError``
for a slot outside its range, but only afterwards. The range is enforced at ``encrypt``.

Wire format: an unpacked vector is ``"PC"``, version 1, scale, count, key fingerprint, then
``count`` ciphertexts of ``key_bits / 4`` bytes; a packed one is ``"PP"``, version 1, scale,
*logical* count, slot bits, fingerprint, then ``ceil(count / L)`` ciphertexts. The coordinator's
``decrypt_masked`` answers ``"PM"`` version 1 (one plaintext per value) or version 2 (count, slot
bits, number of plaintexts); only the mask holder knows the masks and offsets.
"""

from __future__ import annotations

import hashlib
import secrets
import struct
from typing import Any, ClassVar

import gmpy2
import numpy as np
from numpy.typing import ArrayLike

from protocols._paillier_pool import (
    column_products,
    context_for,
    get_n_jobs,
    parallelism,
    set_n_jobs,
)
from protocols._paillier_pool import shutdown as shutdown_workers
from protocols.backend import (
    Backend,
    CiphertextVector,
    Mask,
    PublicKey,
    SecretKey,
    check_kind,
)
from protocols.errors import (
    DecryptionError,
    InsecureParametersError,
    LocalProtocolError,
    ParameterError,
    RemoteProtocolError,
)
from protocols.testing import insecure_keys_are_allowed

__all__ = [
    "MIN_KEY_BITS",
    "VALUE_SCALE_BITS",
    "PLAIN_SCALE_BITS",
    "INPUT_BITS",
    "MASK_HIDING_BITS",
    "PaillierBackend",
    "PaillierPublicKey",
    "PaillierSecretKey",
    "PaillierCiphertextVector",
    "get_n_jobs",
    "parallelism",
    "set_n_jobs",
    "shutdown_workers",
]

MIN_KEY_BITS = 2048
#: Fixed-point bits of encrypted values (scores, residuals).
VALUE_SCALE_BITS = 32
#: Fixed-point bits of plaintext multipliers (features, coefficients).
PLAIN_SCALE_BITS = 32
#: Values given to ``encrypt`` must be below ``2^INPUT_BITS`` in magnitude (the public range).
INPUT_BITS = 32
#: Extra bits allowed for a received fresh vector: a sum of up to 256 fresh encryptions.
SUM_HEADROOM_BITS = 8
#: Statistical hiding of a packed slot: its mask is this many bits wider than the value range.
MASK_HIDING_BITS = 40
_MAX_PLAIN_ABS = 2.0**29  # multipliers must fit int64 exponents after scaling
_PLAIN_BITS = 29 + PLAIN_SCALE_BITS  # |round(k * 2^32)| <= 2^61 for |k| < 2^29
_PK_HEADER = struct.Struct(">2sBH")
_CT_HEADER = struct.Struct(">2sBHI8s")  # tag PC, version, scale, count, fingerprint
_PACKED_HEADER = struct.Struct(">2sBHIH8s")  # tag PP, version, scale, count, slot bits, fp
_MP_HEADER = struct.Struct(">2sBI")  # tag PM, version 1, count
_MP_PACKED_HEADER = struct.Struct(">2sBIHI")  # tag PM, version 2, count, slot bits, plaintexts


class PaillierCiphertextVector(CiphertextVector):
    """Ciphertexts ``c_i`` in ``Z_{n^2}`` sharing one fixed-point ``scale_bits``.

    ``bound_bits`` is a public bound ``|value * 2^scale_bits| < 2^bound_bits`` (``None``:
    unknown). A *packed* vector (``slot_bits > 0``, made by ``mask``) holds ``size`` values in
    fewer ciphertexts and can only be serialised and decrypted with ``decrypt_masked``.
    """

    __slots__ = ("_size", "bound_bits", "fingerprint", "scale_bits", "slot_bits", "values")

    def __init__(
        self,
        values: list[gmpy2.mpz],
        scale_bits: int,
        fingerprint: bytes,
        bound_bits: int | None = None,
        *,
        slot_bits: int = 0,
        size: int | None = None,
    ) -> None:
        self.values = values
        self.scale_bits = scale_bits
        self.fingerprint = fingerprint
        self.bound_bits = bound_bits
        self.slot_bits = slot_bits
        self._size = len(values) if size is None else size

    @property
    def size(self) -> int:
        return self._size

    @property
    def packed(self) -> bool:
        return self.slot_bits > 0

    def __repr__(self) -> str:
        packed = f" in {len(self.values)} packed" if self.slot_bits else ""
        return f"<PaillierCiphertextVector size={self.size}{packed} scale_bits={self.scale_bits}>"


class _PaillierMask(Mask):
    """Per-value masks; with ``slot_bits`` the layout of the packed plaintexts as well."""

    __slots__ = ("bound_bits", "scale_bits", "slot_bits", "values")

    def __init__(
        self, values: list[int], scale_bits: int, slot_bits: int = 0, bound_bits: int = 0
    ) -> None:
        self.values = values
        self.scale_bits = scale_bits
        self.slot_bits = slot_bits
        self.bound_bits = bound_bits


def _check_key_bits(key_bits: int) -> None:
    if not isinstance(key_bits, int) or isinstance(key_bits, bool) or key_bits % 256:
        raise ParameterError(f"key_bits must be a multiple of 256, got {key_bits!r}")
    if key_bits < MIN_KEY_BITS and not insecure_keys_are_allowed():
        raise InsecureParametersError(
            f"key_bits={key_bits} is below the {MIN_KEY_BITS}-bit floor; smaller keys are only "
            "available inside protocols.testing.insecure_keys_allowed()"
        )
    if key_bits < 256:
        raise InsecureParametersError("key_bits below 256 is not supported even in tests")


def _log2_ceil(count: int) -> int:
    return max(0, count - 1).bit_length()


def _plus(bound: int | None, bits: int) -> int | None:
    return None if bound is None else bound + bits


class PaillierPublicKey(PublicKey):
    """Public key ``(n, h_s)`` with encryption and ciphertext arithmetic."""

    backend_name: ClassVar[str] = "paillier"
    tolerance: ClassVar[float] = 1e-6

    def __init__(self, n: int, hs: int) -> None:
        n = gmpy2.mpz(n)
        key_bits = int(n.bit_length())
        _check_key_bits(key_bits)
        if n % 2 == 0 or not 0 < hs < n * n or gmpy2.gcd(hs, n) != 1:
            raise ParameterError("invalid Paillier public key")
        self.n = n
        self.nsquare = n * n
        self.hs = gmpy2.mpz(hs)
        self._key_bits = key_bits
        self._exponent_bytes = key_bits // 16  # a has key_bits / 2 bits
        self._context = context_for(self.n, self.hs)  # table and randomness store, shared
        self.fingerprint = hashlib.sha256(int(n).to_bytes(key_bits // 8, "big")).digest()[:8]
        self._max_encoded = n // 4

    # -- key material ------------------------------------------------------------------------
    @property
    def key_bits(self) -> int:
        return self._key_bits

    def to_bytes(self) -> bytes:
        width = self._key_bits // 8
        return (
            _PK_HEADER.pack(b"PK", 1, self._key_bits)
            + int(self.n).to_bytes(width, "big")
            + int(self.hs).to_bytes(2 * width, "big")
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> PaillierPublicKey:
        if len(data) < _PK_HEADER.size:
            raise RemoteProtocolError("Paillier public key is truncated")
        tag, version, key_bits = _PK_HEADER.unpack_from(data)
        if tag != b"PK" or version != 1 or key_bits % 256 or key_bits == 0:
            raise RemoteProtocolError("not a version-1 Paillier public key")
        width = key_bits // 8
        if len(data) != _PK_HEADER.size + 3 * width:
            raise RemoteProtocolError(
                f"Paillier public key has {len(data)} bytes, expected {_PK_HEADER.size + 3 * width}"
            )
        n = int.from_bytes(data[_PK_HEADER.size : _PK_HEADER.size + width], "big")
        hs = int.from_bytes(data[_PK_HEADER.size + width :], "big")
        if n.bit_length() != key_bits:
            raise RemoteProtocolError("Paillier modulus length does not match its header")
        try:
            return cls(n, hs)
        except InsecureParametersError:
            raise
        except ParameterError as exc:
            raise RemoteProtocolError(str(exc)) from None

    def to_phe(self) -> object:
        """The same key as a ``phe.PaillierPublicKey`` (for interoperability checks)."""
        from phe import paillier

        return paillier.PaillierPublicKey(int(self.n))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PaillierPublicKey) and self.n == other.n and self.hs == other.hs

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (int(self.n), int(self.hs)))

    def __repr__(self) -> str:
        return f"<PaillierPublicKey {self._key_bits} bits {self.fingerprint.hex()}>"

    # -- encoding ------------------------------------------------------------------------------
    @staticmethod
    def _finite(values: ArrayLike, what: str) -> np.ndarray:
        array = np.asarray(values, dtype=np.float64).ravel()
        if not np.all(np.isfinite(array)):
            raise ParameterError(f"{what} must be finite numbers")
        return array

    def _encode(self, values: ArrayLike, scale_bits: int, what: str) -> list[int]:
        array = self._finite(values, what)
        with np.errstate(over="ignore"):
            scaled = np.rint(np.ldexp(array, scale_bits))
        if not np.all(np.isfinite(scaled)):  # overflowed float64 after scaling
            raise ParameterError(f"{what} too large for Paillier fixed-point encoding")
        encoded = [int(v) for v in scaled.tolist()]
        limit = self._max_encoded
        if any(abs(v) >= limit for v in encoded):
            raise ParameterError(f"{what} too large for Paillier fixed-point encoding")
        return encoded

    def _plain_exponents(self, values: ArrayLike, what: str) -> np.ndarray:
        array = np.asarray(values, dtype=np.float64)
        if not np.all(np.isfinite(array)):
            raise ParameterError(f"{what} must be finite numbers")
        if array.size and float(np.max(np.abs(array))) >= _MAX_PLAIN_ABS:
            raise ParameterError(
                f"{what} must be below {_MAX_PLAIN_ABS:.0f} in magnitude (standardise features)"
            )
        return np.rint(np.ldexp(array, PLAIN_SCALE_BITS)).astype(np.int64)

    def _embed(self, m: int, r: gmpy2.mpz) -> gmpy2.mpz:
        """``(1 + m n) r mod n^2`` as ``r + n (m r mod n)``: no full multiplication mod n^2."""
        n = self.n
        c = r + n * (m * (r % n) % n)
        return c - self.nsquare if c >= self.nsquare else c

    # -- randomness ----------------------------------------------------------------------------
    def precompute_randomness(self, count: int, *, wait: bool = True) -> None:
        """Make ``count`` encryption randomness values now for later ``encrypt``/``mask`` calls.

        With ``n_jobs > 1`` (see :func:`parallelism`) the values are made in worker processes;
        ``wait=False`` returns at once and the values join the store as workers finish them.
        The store belongs to the key ``(n, h_s)`` in this process: every key object with the
        same public key draws from it, and each value is used by exactly one ciphertext.

        Raises
        ------
        ParameterError
            If ``count`` is not a non-negative int.
        """
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ParameterError(f"count must be a non-negative int, got {count!r}")
        self._context.precompute(count, wait=wait)

    @property
    def randomness_available(self) -> int:
        """Precomputed randomness values ready in the store."""
        return self._context.available

    def _random_factors(self, count: int) -> list[gmpy2.mpz]:
        """``count`` fresh ``h_s^a`` (randomness of encryptions of zero), each used once."""
        # secrets is looked up here so that known-answer tests can fix the exponents
        return self._context.random_factors(count, secrets.token_bytes)

    def _wrap(
        self, values: list[gmpy2.mpz], scale_bits: int, bound_bits: int | None
    ) -> PaillierCiphertextVector:
        if bound_bits is not None and bound_bits >= self._key_bits:
            bound_bits = None
        return PaillierCiphertextVector(values, scale_bits, self.fingerprint, bound_bits)

    def _own(self, a: CiphertextVector) -> PaillierCiphertextVector:
        if not isinstance(a, PaillierCiphertextVector) or a.fingerprint != self.fingerprint:
            raise LocalProtocolError("ciphertext does not belong to this Paillier key")
        if a.packed:
            raise LocalProtocolError("a packed (masked) vector can only be decrypted")
        return a

    # -- operations ---------------------------------------------------------------------------
    def encrypt(self, values: ArrayLike) -> PaillierCiphertextVector:
        return self.encrypt_at_scale(values, VALUE_SCALE_BITS)

    def encrypt_at_scale(self, values: ArrayLike, scale_bits: int) -> PaillierCiphertextVector:
        """Fresh encryption with an explicit fixed-point exponent.

        Raises
        ------
        ParameterError
            Non-finite values, or values of magnitude ``2^INPUT_BITS`` or more.
        """
        array = self._finite(values, "values to encrypt")
        if array.size and float(np.max(np.abs(array))) >= 2.0**INPUT_BITS:
            raise ParameterError(
                f"values to encrypt must be below 2^{INPUT_BITS} in magnitude (the public range "
                "that masks rely on)"
            )
        encoded = self._encode(array, scale_bits, "values to encrypt")
        factors = self._random_factors(len(encoded))
        values = [self._embed(m, r) for m, r in zip(encoded, factors)]
        return self._wrap(values, scale_bits, scale_bits + INPUT_BITS)

    def _rescaled(self, a: PaillierCiphertextVector, scale_bits: int) -> PaillierCiphertextVector:
        if a.scale_bits == scale_bits:
            return a
        shift = scale_bits - a.scale_bits
        factor = gmpy2.mpz(1) << shift
        return self._wrap(
            [gmpy2.powmod(c, factor, self.nsquare) for c in a.values],
            scale_bits,
            _plus(a.bound_bits, shift),
        )

    def add(self, a: CiphertextVector, b: CiphertextVector) -> PaillierCiphertextVector:
        a, b = self._own(a), self._own(b)
        if a.size != b.size:
            raise LocalProtocolError(f"cannot add vectors of sizes {a.size} and {b.size}")
        scale = max(a.scale_bits, b.scale_bits)
        a, b = self._rescaled(a, scale), self._rescaled(b, scale)
        n2 = self.nsquare
        bound = None
        if a.bound_bits is not None and b.bound_bits is not None:
            bound = max(a.bound_bits, b.bound_bits) + 1
        return self._wrap([x * y % n2 for x, y in zip(a.values, b.values)], scale, bound)

    def add_plain(self, a: CiphertextVector, values: ArrayLike) -> PaillierCiphertextVector:
        a = self._own(a)
        encoded = self._encode(values, a.scale_bits, "plaintext addend")
        if len(encoded) != a.size:
            raise LocalProtocolError(f"cannot add {len(encoded)} plaintexts to {a.size} values")
        n, n2 = self.n, self.nsquare
        bound = None
        if a.bound_bits is not None:
            largest = max((abs(m) for m in encoded), default=0)
            bound = max(a.bound_bits, largest.bit_length()) + 1
        return self._wrap(
            [c * (1 + (m % n) * n) % n2 for c, m in zip(a.values, encoded)], a.scale_bits, bound
        )

    def mul_plain(self, a: CiphertextVector, values: ArrayLike) -> PaillierCiphertextVector:
        a = self._own(a)
        exponents = self._plain_exponents(values, "plaintext multipliers").ravel()
        if exponents.size != a.size:
            raise LocalProtocolError(f"cannot multiply {a.size} values by {exponents.size}")
        n2 = self.nsquare
        out = []
        for c, k in zip(a.values, exponents.tolist()):
            if k >= 0:
                out.append(gmpy2.powmod(c, k, n2))
            else:
                out.append(gmpy2.powmod(gmpy2.invert(c, n2), -k, n2))
        # the public multiplier limit, not the data's: the bound reaches the coordinator
        return self._wrap(out, a.scale_bits + PLAIN_SCALE_BITS, _plus(a.bound_bits, _PLAIN_BITS))

    def sum(self, a: CiphertextVector) -> PaillierCiphertextVector:
        a = self._own(a)
        n2 = self.nsquare
        total = gmpy2.mpz(1)
        for c in a.values:
            total = total * c % n2
        return self._wrap([total], a.scale_bits, _plus(a.bound_bits, _log2_ceil(a.size)))

    def dot_columns(self, matrix: np.ndarray, a: CiphertextVector) -> PaillierCiphertextVector:
        a = self._own(a)
        matrix = np.asarray(matrix, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[0] != a.size:
            raise LocalProtocolError(
                f"matrix of shape {matrix.shape} does not match {a.size} ciphertexts"
            )
        exponents = self._plain_exponents(matrix, "feature values")
        out = column_products(a.values, exponents, self.nsquare, self._key_bits)
        bound = _plus(a.bound_bits, _PLAIN_BITS + _log2_ceil(a.size))
        return self._wrap(out, a.scale_bits + PLAIN_SCALE_BITS, bound)

    def rerandomize(self, a: CiphertextVector) -> PaillierCiphertextVector:
        a = self._own(a)
        n2 = self.nsquare
        factors = self._random_factors(a.size)
        values = [c * r % n2 for c, r in zip(a.values, factors)]
        return self._wrap(values, a.scale_bits, a.bound_bits)

    def _slot_layout(self, a: PaillierCiphertextVector) -> tuple[int, int] | None:
        """``(slot_bits, slots per plaintext)`` when packing saves ciphertexts, else ``None``."""
        if a.bound_bits is None:
            return None
        slot_bits = a.bound_bits + 2 + MASK_HIDING_BITS
        per = (self._key_bits - 1) // slot_bits
        if per < 2 or -(-a.size // per) >= a.size:
            return None
        return slot_bits, per

    def mask(self, a: CiphertextVector) -> tuple[PaillierCiphertextVector, Mask]:
        a = self._own(a)
        n, n2 = self.n, self.nsquare
        layout = self._slot_layout(a)
        if layout is None:
            # Uniform in Z_n: the coordinator's decryption v + r mod n is uniform whatever v is.
            masks = [secrets.randbelow(int(n)) for _ in range(a.size)]
            factors = self._random_factors(a.size)
            values = [c * self._embed(r, f) % n2 for c, r, f in zip(a.values, masks, factors)]
            return self._wrap(values, a.scale_bits, None), _PaillierMask(masks, a.scale_bits)
        slot_bits, per = layout
        assert a.bound_bits is not None
        offset = 1 << a.bound_bits
        masks = [secrets.randbits(slot_bits - 1) for _ in range(a.size)]
        groups = range(0, a.size, per)
        factors = self._random_factors(len(groups))
        shift = gmpy2.mpz(1) << slot_bits
        packed = []
        for start, factor in zip(groups, factors):
            stop = min(start + per, a.size)
            acc = a.values[stop - 1]
            plain = offset + masks[stop - 1]
            for k in range(stop - 2, start - 1, -1):  # Horner: slot 0 is the lowest
                acc = gmpy2.powmod(acc, shift, n2) * a.values[k] % n2
                plain = (plain << slot_bits) + offset + masks[k]
            packed.append(acc * self._embed(plain, factor) % n2)
        vector = PaillierCiphertextVector(
            packed, a.scale_bits, self.fingerprint, None, slot_bits=slot_bits, size=a.size
        )
        return vector, _PaillierMask(masks, a.scale_bits, slot_bits, a.bound_bits)

    def unmask(self, masked: bytes, mask: Mask) -> np.ndarray:
        if not isinstance(mask, _PaillierMask):
            raise LocalProtocolError("mask does not come from a Paillier key")
        if len(masked) < _MP_HEADER.size:
            raise RemoteProtocolError("masked plaintext is truncated")
        if mask.slot_bits:
            return self._unmask_packed(masked, mask)
        width = self._key_bits // 8
        tag, version, count = _MP_HEADER.unpack_from(masked)
        if tag != b"PM" or version != 1 or count != len(mask.values):
            raise RemoteProtocolError(
                f"masked plaintext does not match the mask (expected {len(mask.values)} values)"
            )
        if len(masked) != _MP_HEADER.size + count * width:
            raise RemoteProtocolError("masked plaintext has the wrong length")
        n = int(self.n)
        out = np.empty(count, dtype=np.float64)
        for i, r in enumerate(mask.values):
            start = _MP_HEADER.size + i * width
            w = int.from_bytes(masked[start : start + width], "big")
            if w >= n:
                raise RemoteProtocolError("masked plaintext value out of range")
            out[i] = self._decode_signed((w - r) % n, mask.scale_bits)
        return out

    def _unmask_packed(self, masked: bytes, mask: _PaillierMask) -> np.ndarray:
        width = self._key_bits // 8
        count, slot_bits = len(mask.values), mask.slot_bits
        per = (self._key_bits - 1) // slot_bits
        n_plain = -(-count // per)
        expected = (b"PM", 2, count, slot_bits, n_plain)
        header_ok = len(masked) >= _MP_PACKED_HEADER.size
        if not header_ok or _MP_PACKED_HEADER.unpack_from(masked) != expected:
            raise RemoteProtocolError(
                f"masked plaintext does not match the mask (expected {count} packed values)"
            )
        if len(masked) != _MP_PACKED_HEADER.size + n_plain * width:
            raise RemoteProtocolError("masked plaintext has the wrong length")
        n = int(self.n)
        offset = 1 << mask.bound_bits
        slot_mask = (1 << slot_bits) - 1
        scale = 1 << mask.scale_bits
        out = np.empty(count, dtype=np.float64)
        for g in range(n_plain):
            start = _MP_PACKED_HEADER.size + g * width
            w = int.from_bytes(masked[start : start + width], "big")
            if w >= n:
                raise RemoteProtocolError("masked plaintext value out of range")
            for j in range(g * per, min((g + 1) * per, count)):
                shifted = (w & slot_mask) - mask.values[j]
                w >>= slot_bits
                if not 0 <= shifted < 2 * offset:
                    raise RemoteProtocolError("masked plaintext slot out of range")
                out[j] = (shifted - offset) / scale
            if w:  # bits above the last slot: not something decrypt_masked of our vector made
                raise RemoteProtocolError("masked plaintext has bits outside its slots")
        return out

    def _decode_signed(self, x: int, scale_bits: int) -> float:
        n = int(self.n)
        quarter = n // 4
        if x <= quarter:
            value = x
        elif x >= n - quarter:
            value = x - n
        else:
            raise DecryptionError("decrypted value is outside the fixed-point range")
        return value / (1 << scale_bits)

    # -- serialisation ------------------------------------------------------------------------
    def ciphertext_to_bytes(self, a: CiphertextVector) -> bytes:
        if not isinstance(a, PaillierCiphertextVector) or a.fingerprint != self.fingerprint:
            raise LocalProtocolError("ciphertext does not belong to this Paillier key")
        width = self._key_bits // 4
        if a.packed:
            header = _PACKED_HEADER.pack(
                b"PP", 1, a.scale_bits, a.size, a.slot_bits, self.fingerprint
            )
        else:
            header = _CT_HEADER.pack(b"PC", 1, a.scale_bits, a.size, self.fingerprint)
        return header + b"".join([c.to_bytes(width, "big") for c in a.values])

    def ciphertext_from_bytes(
        self, data: bytes, *, depth: int | None = None, kind: str | None = None
    ) -> PaillierCiphertextVector:
        check_kind(kind)
        if len(data) < 2:
            raise RemoteProtocolError("Paillier ciphertext vector is truncated")
        if data[:2] == b"PP":
            if kind not in (None, "masked"):
                raise RemoteProtocolError(f"a packed Paillier vector cannot be a {kind} vector")
            return self._packed_from_bytes(data, depth)
        if len(data) < _CT_HEADER.size:
            raise RemoteProtocolError("Paillier ciphertext vector is truncated")
        tag, version, scale_bits, count, fingerprint = _CT_HEADER.unpack_from(data)
        if tag != b"PC" or version != 1:
            raise RemoteProtocolError("not a version-1 Paillier ciphertext vector")
        if fingerprint != self.fingerprint:
            raise RemoteProtocolError("ciphertext was made under a different public key")
        width = self._key_bits // 4
        if len(data) != _CT_HEADER.size + count * width:
            raise RemoteProtocolError(
                f"ciphertext vector of {count} values should be "
                f"{_CT_HEADER.size + count * width} bytes, got {len(data)}"
            )
        self._check_scale(scale_bits, depth)
        values = self._read_values(data, _CT_HEADER.size, count)
        # a fresh-scale vector is a sum of fresh encryptions; anything else has no public bound
        bound = None
        if scale_bits == VALUE_SCALE_BITS:
            bound = VALUE_SCALE_BITS + INPUT_BITS + SUM_HEADROOM_BITS
        return self._wrap(values, scale_bits, bound)

    def _check_scale(self, scale_bits: int, depth: int | None) -> None:
        if scale_bits > 4 * PLAIN_SCALE_BITS:
            raise RemoteProtocolError(f"ciphertext scale of {scale_bits} bits is not plausible")
        if depth is not None and scale_bits != VALUE_SCALE_BITS + depth * PLAIN_SCALE_BITS:
            raise RemoteProtocolError(
                f"ciphertext has fixed-point scale {scale_bits} bits, expected "
                f"{VALUE_SCALE_BITS + depth * PLAIN_SCALE_BITS} (depth {depth})"
            )

    def _read_values(self, data: bytes, offset: int, count: int) -> list[gmpy2.mpz]:
        width = self._key_bits // 4
        n, n2 = self.n, self.nsquare
        view = memoryview(data)
        values = [
            gmpy2.mpz.from_bytes(view[offset + i * width : offset + (i + 1) * width], "big")
            for i in range(count)
        ]
        if not all(0 < c < n2 for c in values):
            raise RemoteProtocolError("ciphertext value out of range")
        # Units only (a non-unit would make mul_plain/dot_columns fail in an inversion): one gcd
        # of the product modulo n instead of one per value.
        product = gmpy2.mpz(1)
        for c in values:
            product = product * c % n
        if gmpy2.gcd(product, n) != 1:
            raise RemoteProtocolError("ciphertext value out of range")
        return values

    def _packed_from_bytes(self, data: bytes, depth: int | None) -> PaillierCiphertextVector:
        if len(data) < _PACKED_HEADER.size:
            raise RemoteProtocolError("Paillier ciphertext vector is truncated")
        _, version, scale_bits, count, slot_bits, fingerprint = _PACKED_HEADER.unpack_from(data)
        if version != 1:
            raise RemoteProtocolError("not a version-1 packed Paillier ciphertext vector")
        if fingerprint != self.fingerprint:
            raise RemoteProtocolError("ciphertext was made under a different public key")
        per = (self._key_bits - 1) // slot_bits if slot_bits > MASK_HIDING_BITS + 2 else 0
        n_plain = -(-count // per) if per >= 2 else count
        if per < 2 or n_plain >= count:
            raise RemoteProtocolError(f"packed vector with {slot_bits}-bit slots is not valid")
        width = self._key_bits // 4
        if len(data) != _PACKED_HEADER.size + n_plain * width:
            raise RemoteProtocolError(
                f"packed vector of {count} values should be "
                f"{_PACKED_HEADER.size + n_plain * width} bytes, got {len(data)}"
            )
        self._check_scale(scale_bits, depth)
        values = self._read_values(data, _PACKED_HEADER.size, n_plain)
        return PaillierCiphertextVector(
            values, scale_bits, self.fingerprint, None, slot_bits=slot_bits, size=count
        )


class PaillierSecretKey(SecretKey):
    """The factorisation of ``n``. Never serialised, pickled or copied."""

    def __init__(self, public_key: PaillierPublicKey, p: int, q: int) -> None:
        p, q = gmpy2.mpz(p), gmpy2.mpz(q)
        if p * q != public_key.n or p == q:
            raise ParameterError("p and q do not factor the public modulus")
        self._public_key = public_key
        self._p, self._q = p, q
        self._psquare, self._qsquare = p * p, q * q
        g = public_key.n + 1
        self._hp = gmpy2.invert((gmpy2.powmod(g, p - 1, self._psquare) - 1) // p, p)
        self._hq = gmpy2.invert((gmpy2.powmod(g, q - 1, self._qsquare) - 1) // q, q)
        self._q_inv_p = gmpy2.invert(q, p)

    @property
    def public_key(self) -> PaillierPublicKey:
        return self._public_key

    def to_phe(self) -> object:
        """The same key as a ``phe.PaillierPrivateKey`` (for interoperability checks)."""
        from phe import paillier

        return paillier.PaillierPrivateKey(self._public_key.to_phe(), int(self._p), int(self._q))

    def _raw_decrypt(self, c: gmpy2.mpz) -> int:
        p, q = self._p, self._q
        mp = (gmpy2.powmod(c, p - 1, self._psquare) - 1) // p * self._hp % p
        mq = (gmpy2.powmod(c, q - 1, self._qsquare) - 1) // q * self._hq % q
        return int(mq + q * ((mp - mq) * self._q_inv_p % p))

    def _own(self, a: CiphertextVector) -> PaillierCiphertextVector:
        if (
            not isinstance(a, PaillierCiphertextVector)
            or a.fingerprint != self._public_key.fingerprint
        ):
            raise DecryptionError("cannot decrypt this ciphertext")
        return a

    def decrypt(self, a: CiphertextVector) -> np.ndarray:
        a = self._own(a)
        if a.packed:  # masked slots are for their owner only
            raise DecryptionError("cannot decrypt this ciphertext")
        pk = self._public_key
        return np.array(
            [pk._decode_signed(self._raw_decrypt(c), a.scale_bits) for c in a.values],
            dtype=np.float64,
        )

    def decrypt_masked(self, a: CiphertextVector) -> bytes:
        a = self._own(a)
        width = self._public_key.key_bits // 8
        if a.packed:
            header = _MP_PACKED_HEADER.pack(b"PM", 2, a.size, a.slot_bits, len(a.values))
        else:
            header = _MP_HEADER.pack(b"PM", 1, a.size)
        return header + b"".join(self._raw_decrypt(c).to_bytes(width, "big") for c in a.values)


def _random_prime(bits: int) -> gmpy2.mpz:
    while True:
        # top two bits set so that p*q has exactly 2*bits bits; = 3 mod 4 for the DJN subgroup
        candidate = gmpy2.mpz(secrets.randbits(bits) | (3 << (bits - 2)) | 3)
        if gmpy2.is_prime(candidate, 64):
            return candidate


class PaillierBackend(Backend):
    """Key factory for the Paillier scheme."""

    name: ClassVar[str] = "paillier"

    def generate_secret_key(
        self, key_bits: int = MIN_KEY_BITS, *, vector_width: int = 1
    ) -> PaillierSecretKey:
        """``vector_width`` is ignored: masks pack values by their public bound instead."""
        _check_key_bits(key_bits)
        half = key_bits // 2
        while True:
            p, q = _random_prime(half), _random_prime(half)
            n = p * q
            if p != q and n.bit_length() == key_bits:
                break
        while True:
            x = gmpy2.mpz(secrets.randbelow(int(n)))
            if x > 1 and gmpy2.gcd(x, n) == 1:
                break
        h = (-x * x) % n
        hs = gmpy2.powmod(h, n, n * n)
        return PaillierSecretKey(PaillierPublicKey(n, hs), p, q)

    def public_key_from_bytes(self, data: bytes) -> PaillierPublicKey:
        return PaillierPublicKey.from_bytes(data)
