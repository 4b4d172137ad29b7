"""Paillier backend: phe-compatible keys, gmpy2 arithmetic, fixed-point encoding.

Choices and why:

* **Generator g = n + 1**, so ``g^m = 1 + m n mod n^2`` costs one multiplication; keys remain
  valid ``phe`` keys (``phe`` uses the same generator): see :meth:`PaillierPublicKey.to_phe`.
* **Randomness** ``r^n`` is replaced by ``h_s^a`` with ``h = -x^2 mod n``, ``h_s = h^n mod n^2``
  and a fresh ``a`` of ``key_bits / 2`` bits from :mod:`secrets` (Damgård, Jurik and Nielsen,
  "A generalization of Paillier's public-key system with applications to electronic voting",
  Int. J. Inf. Secur. 9, 2010, sect. 4.2; the same exponent length as SecretFlow's HEU). This
  needs ``p = q = 3 mod 4``, so keys are generated here. ``h_s^a`` uses a fixed-base table of
  8-bit windows: ``key_bits / 16`` multiplications per encryption instead of a full ``powmod``.
* **One public fixed-point exponent** for every value of a vector (``scale_bits``): values are
  ``round(v * 2^scale_bits) mod n``; phe's per-value exponents would leak magnitudes.
* **Decryption by CRT** modulo ``p^2`` and ``q^2``.
* ``X^T [[d]]`` by bucket multi-exponentiation with positive and negative multipliers
  accumulated separately and one inversion per column.
"""

from __future__ import annotations

import hashlib
import secrets
import struct
from typing import ClassVar

import gmpy2
import numpy as np
from numpy.typing import ArrayLike

from protocols._multiexp import multi_exp
from protocols.backend import Backend, CiphertextVector, Mask, PublicKey, SecretKey
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
    "PaillierBackend",
    "PaillierPublicKey",
    "PaillierSecretKey",
    "PaillierCiphertextVector",
]

MIN_KEY_BITS = 2048
#: Fixed-point bits of encrypted values (scores, residuals).
VALUE_SCALE_BITS = 32
#: Fixed-point bits of plaintext multipliers (features, coefficients).
PLAIN_SCALE_BITS = 32
_WINDOW_BITS = 8
_MAX_PLAIN_ABS = 2.0**29  # multipliers must fit int64 exponents after scaling
_PK_HEADER = struct.Struct(">2sBH")
_CT_HEADER = struct.Struct(">2sBHI8s")
_MP_HEADER = struct.Struct(">2sBI")


class PaillierCiphertextVector(CiphertextVector):
    """Ciphertexts ``c_i`` in ``Z_{n^2}`` sharing one fixed-point ``scale_bits``."""

    __slots__ = ("fingerprint", "scale_bits", "values")

    def __init__(self, values: list[gmpy2.mpz], scale_bits: int, fingerprint: bytes) -> None:
        self.values = values
        self.scale_bits = scale_bits
        self.fingerprint = fingerprint

    @property
    def size(self) -> int:
        return len(self.values)

    def __repr__(self) -> str:
        return f"<PaillierCiphertextVector size={self.size} scale_bits={self.scale_bits}>"


class _PaillierMask(Mask):
    __slots__ = ("scale_bits", "values")

    def __init__(self, values: list[int], scale_bits: int) -> None:
        self.values = values
        self.scale_bits = scale_bits


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
        self._table: list[list[gmpy2.mpz]] | None = None
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
        return (
            isinstance(other, PaillierPublicKey) and self.n == other.n and self.hs == other.hs
        )

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    def __repr__(self) -> str:
        return f"<PaillierPublicKey {self._key_bits} bits {self.fingerprint.hex()}>"

    # -- encoding ------------------------------------------------------------------------------
    def _encode(self, values: ArrayLike, scale_bits: int, what: str) -> list[int]:
        array = np.asarray(values, dtype=np.float64).ravel()
        if not np.all(np.isfinite(array)):
            raise ParameterError(f"{what} must be finite numbers")
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

    # -- randomness ----------------------------------------------------------------------------
    def _ensure_table(self) -> list[list[gmpy2.mpz]]:
        if self._table is None:
            table = []
            base = self.hs
            n2 = self.nsquare
            for _ in range(self._exponent_bytes):
                row = [gmpy2.mpz(1), base]
                for _ in range(2, 1 << _WINDOW_BITS):
                    row.append(row[-1] * base % n2)
                table.append(row)
                base = row[-1] * base % n2  # base^(2^8) for the next window
            self._table = table
        return self._table

    def _random_factors(self, count: int) -> list[gmpy2.mpz]:
        """``count`` fresh encryptions of zero's randomness ``h_s^a``."""
        table = self._ensure_table()
        n2 = self.nsquare
        out = []
        for _ in range(count):
            acc = gmpy2.mpz(1)
            for row, digit in zip(table, secrets.token_bytes(self._exponent_bytes)):
                if digit:
                    acc = acc * row[digit] % n2
            out.append(acc)
        return out

    def _wrap(self, values: list[gmpy2.mpz], scale_bits: int) -> PaillierCiphertextVector:
        return PaillierCiphertextVector(values, scale_bits, self.fingerprint)

    def _own(self, a: CiphertextVector) -> PaillierCiphertextVector:
        if not isinstance(a, PaillierCiphertextVector) or a.fingerprint != self.fingerprint:
            raise LocalProtocolError("ciphertext does not belong to this Paillier key")
        return a

    # -- operations ---------------------------------------------------------------------------
    def encrypt(self, values: ArrayLike) -> PaillierCiphertextVector:
        return self.encrypt_at_scale(values, VALUE_SCALE_BITS)

    def encrypt_at_scale(self, values: ArrayLike, scale_bits: int) -> PaillierCiphertextVector:
        """Fresh encryption with an explicit fixed-point exponent."""
        encoded = self._encode(values, scale_bits, "values to encrypt")
        n, n2 = self.n, self.nsquare
        factors = self._random_factors(len(encoded))
        values = [(1 + (m % n) * n) * r % n2 for m, r in zip(encoded, factors)]
        return self._wrap(values, scale_bits)

    def _rescaled(self, a: PaillierCiphertextVector, scale_bits: int) -> PaillierCiphertextVector:
        if a.scale_bits == scale_bits:
            return a
        factor = gmpy2.mpz(1) << (scale_bits - a.scale_bits)
        return self._wrap([gmpy2.powmod(c, factor, self.nsquare) for c in a.values], scale_bits)

    def add(self, a: CiphertextVector, b: CiphertextVector) -> PaillierCiphertextVector:
        a, b = self._own(a), self._own(b)
        if a.size != b.size:
            raise LocalProtocolError(f"cannot add vectors of sizes {a.size} and {b.size}")
        scale = max(a.scale_bits, b.scale_bits)
        a, b = self._rescaled(a, scale), self._rescaled(b, scale)
        n2 = self.nsquare
        return self._wrap([x * y % n2 for x, y in zip(a.values, b.values)], scale)

    def add_plain(self, a: CiphertextVector, values: ArrayLike) -> PaillierCiphertextVector:
        a = self._own(a)
        encoded = self._encode(values, a.scale_bits, "plaintext addend")
        if len(encoded) != a.size:
            raise LocalProtocolError(f"cannot add {len(encoded)} plaintexts to {a.size} values")
        n, n2 = self.n, self.nsquare
        return self._wrap(
            [c * (1 + (m % n) * n) % n2 for c, m in zip(a.values, encoded)], a.scale_bits
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
        return self._wrap(out, a.scale_bits + PLAIN_SCALE_BITS)

    def sum(self, a: CiphertextVector) -> PaillierCiphertextVector:
        a = self._own(a)
        n2 = self.nsquare
        total = gmpy2.mpz(1)
        for c in a.values:
            total = total * c % n2
        return self._wrap([total], a.scale_bits)

    def dot_columns(self, matrix: np.ndarray, a: CiphertextVector) -> PaillierCiphertextVector:
        a = self._own(a)
        matrix = np.asarray(matrix, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[0] != a.size:
            raise LocalProtocolError(
                f"matrix of shape {matrix.shape} does not match {a.size} ciphertexts"
            )
        exponents = self._plain_exponents(matrix, "feature values")
        n2 = self.nsquare
        out = []
        for column in exponents.T:
            positive = multi_exp(a.values, np.where(column > 0, column, 0), n2)
            negative = multi_exp(a.values, np.where(column < 0, -column, 0), n2)
            out.append(positive * gmpy2.invert(negative, n2) % n2 if negative != 1 else positive)
        return self._wrap(out, a.scale_bits + PLAIN_SCALE_BITS)

    def rerandomize(self, a: CiphertextVector) -> PaillierCiphertextVector:
        a = self._own(a)
        n2 = self.nsquare
        factors = self._random_factors(a.size)
        return self._wrap([c * r % n2 for c, r in zip(a.values, factors)], a.scale_bits)

    def mask(self, a: CiphertextVector) -> tuple[PaillierCiphertextVector, Mask]:
        a = self._own(a)
        n, n2 = self.n, self.nsquare
        # Uniform in Z_n: the coordinator's decryption v + r mod n is uniform whatever v is.
        masks = [secrets.randbelow(int(n)) for _ in range(a.size)]
        factors = self._random_factors(a.size)
        values = [c * (1 + r * n) * f % n2 for c, r, f in zip(a.values, masks, factors)]
        return self._wrap(values, a.scale_bits), _PaillierMask(masks, a.scale_bits)

    def unmask(self, masked: bytes, mask: Mask) -> np.ndarray:
        if not isinstance(mask, _PaillierMask):
            raise LocalProtocolError("mask does not come from a Paillier key")
        width = self._key_bits // 8
        if len(masked) < _MP_HEADER.size:
            raise RemoteProtocolError("masked plaintext is truncated")
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
        a = self._own(a)
        width = self._key_bits // 4
        header = _CT_HEADER.pack(b"PC", 1, a.scale_bits, a.size, self.fingerprint)
        return header + b"".join(int(c).to_bytes(width, "big") for c in a.values)

    def ciphertext_from_bytes(
        self, data: bytes, *, depth: int | None = None
    ) -> PaillierCiphertextVector:
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
        if scale_bits > 4 * PLAIN_SCALE_BITS:
            raise RemoteProtocolError(f"ciphertext scale of {scale_bits} bits is not plausible")
        if depth is not None and scale_bits != VALUE_SCALE_BITS + depth * PLAIN_SCALE_BITS:
            raise RemoteProtocolError(
                f"ciphertext has fixed-point scale {scale_bits} bits, expected "
                f"{VALUE_SCALE_BITS + depth * PLAIN_SCALE_BITS} (depth {depth})"
            )
        n, n2 = self.n, self.nsquare
        values = []
        view = memoryview(data)[_CT_HEADER.size :]
        for i in range(count):
            c = gmpy2.mpz(int.from_bytes(view[i * width : (i + 1) * width], "big"))
            # A non-unit would make mul_plain/dot_columns fail in gmpy2.invert (ZeroDivisionError).
            if not 0 < c < n2 or gmpy2.gcd(c, n) != 1:
                raise RemoteProtocolError("ciphertext value out of range")
            values.append(c)
        return self._wrap(values, scale_bits)


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
        pk = self._public_key
        return np.array(
            [pk._decode_signed(self._raw_decrypt(c), a.scale_bits) for c in a.values],
            dtype=np.float64,
        )

    def decrypt_masked(self, a: CiphertextVector) -> bytes:
        a = self._own(a)
        width = self._public_key.key_bits // 8
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
        """``vector_width`` is ignored: Paillier packs one value per ciphertext."""
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
