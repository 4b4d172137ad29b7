"""CKKS backend on Microsoft SEAL, through the ``sealapi`` bindings that ship with TenSEAL.

Why ``sealapi`` and not ``tenseal.CKKSVector``: the packing below needs plaintexts laid out
slot by slot and the raw ciphertext objects; ``CKKSVector.matmul`` would rotate once per row
(10-50x slower here).

Parameters (128-bit security per the HomomorphicEncryption.org standard, Albrecht et al. 2018:
N = 8192 allows a 218-bit modulus, N = 16384 allows 438 bits):

* ``N = 8192`` (4096 slots) when every party's gradient fits a 1024-slot block, else 16384;
  coefficient moduli of 60, 40, 40 and 60 bits (200 bits; the last is the special prime);
* scale ``2^40``; two rescaling levels, of which the protocol uses one (one plaintext product).

Layouts. A vector of ``m`` values is *replicated* (``r``): value ``i`` fills the block of
``width`` slots ``[i*width, (i+1)*width)`` (sample-major), ``per = 4096 // width`` values per
ciphertext (``width`` is the largest gradient, any size). The gradient ``X^T [[d]]`` is then one
plaintext multiply per ciphertext by the party's feature rows (laid out the same way), a sum of
the batch's ciphertexts and one rescale: an *unreduced* (``u``) vector, value ``j`` being the sum
of slot ``j`` over the ``per`` blocks. Unreduced vectors add up slot by slot.

The block sum is not done with rotations. A rotate-and-sum costs ``log2(per)`` key switches per
gradient (8 at width 16: most of an epoch's CPU time), and Galois keys make the public key about
11 MB. Instead the sender *blinds* every slot and the coordinator sums the blocks after
decryption (layout ``b``):

* :meth:`CKKSPublicKey.mask` adds, in column ``j``, ``r_bj = rho_j / per + s_bj - mean_b s_bj``
  with ``rho_j`` uniform in ``[-2^40, 2^40]`` and ``s_bj`` uniform in ``[-2^k, 2^k]``, ``k = 37 -
  log2(per) / 2`` (33 for 256 blocks). The block sums carry the mask ``rho_j`` (the party keeps
  it); each slot's partial sum is hidden by ``s_bj`` (its centred part; statistical distance at
  most ``sum_b |v_bj - mean| / 2^(k+1)``, the total at most ``|g_j| / 2^41``). The slot blinds
  stay this small so that decoding 4096 slots as float64 and summing them (``math.fsum``) keeps
  about ``2^-10`` absolute precision: the decoding error of a slot grows with the largest value
  in the ciphertext, and the block sum adds ``per`` of them.
* :meth:`CKKSPublicKey.prepare_decryption` (the loss) adds the same ``s_bj - mean_b s_bj``
  with ``rho = 0``: the block sums are the values, no slot shows a partial sum.
  :meth:`CKKSPublicKey.encrypt_total` spreads a total over column 0 of every block.
* These are statistical bounds per column and round (``docs/security.md``): far weaker than
  Paillier's masks in ``Z_n``.
* The secret key refuses unblinded unreduced vectors: their slots are partial sums.

Safety the backend enforces:

* Magnitudes are tracked (an upper bound per vector, part of its serialisation) and checked
  against the precision budget: a value that would outgrow the modulus left at its level (CKKS
  then decrypts garbage without error) or lose float64 precision raises ``ParameterError``.
* Every slot the coordinator can decrypt that holds a value is masked or blinded (the padding
  past the last value of a replicated vector holds zeros); the copies that the replicated
  layout keeps of one value get one mask (independent masks on copies could be averaged away).
* Before the coordinator releases a decryption it adds Gaussian noise (sigma ``2^-12``) and
  rounds to ``2^-16`` (Li and Micciancio, EUROCRYPT 2021: exact CKKS decryptions of known
  plaintexts leak the secret key). This costs about ``2^-12`` absolute precision on each released
  value; it blurs the decryption error but is not a cryptographic-strength flooding (that would
  need far more precision than float64 and this modulus give).
* Only the parameters and the public key are serialised (no relinearisation or Galois keys are
  needed: about 0.5 MB); the secret key never is.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import struct
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import tenseal.sealapi as seal
from numpy.typing import ArrayLike

from protocols._ckks_io import _blobs, _load, _save, _unblob
from protocols._ckks_pool import store_for
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
    LocalProtocolError,
    ParameterError,
    RemoteProtocolError,
)

__all__ = ["CKKSBackend", "CKKSPublicKey", "CKKSSecretKey", "CKKSCiphertextVector"]

SCALE_BITS = 40
COEFF_BITS = (60, 40, 40, 60)
MASK_BITS = 40
#: Per-slot blinds of unreduced vectors are 2^b with 2^b * sqrt(blocks) = 2^BLIND_BUDGET_BITS:
#: the float64 error of a block sum grows with both (about 2^-10 absolute; see above).
BLIND_BUDGET_BITS = 37
#: Largest magnitude any encrypted value may reach (float64 keeps ~2^-13 absolute precision).
MAX_ABS = 2.0**41
#: Largest magnitude of values handed to ``encrypt`` by callers.
MAX_INPUT_ABS = 2.0**20
FLOOD_SIGMA = 2.0**-12
ROUND_TO = 2.0**-16
_MAX_DEPTH = len(COEFF_BITS) - 2
_PK_HEADER = struct.Struct(">2sBHH")  # tag, version, log2 N, width
_CT_HEADER = struct.Struct(">2sBcHIBHd8s")  # tag, version, layout, width, size, depth, n, bound, fp
_MP_HEADER = struct.Struct(">2sBI")
#: Layouts each kind of received vector may have (see :data:`protocols.backend.KINDS`).
_LAYOUTS_OF_KIND = {"vector": "r", "total": "u", "masked": "rb", "prepared": "rb"}


def _degree_for(width: int) -> int:
    return 8192 if width <= 1024 else 16384


def _secure_uniform(count: int, bound: float) -> np.ndarray:
    """Uniform reals in ``[-bound, bound]`` from :mod:`secrets` (53 random bits each)."""
    raw = np.frombuffer(secrets.token_bytes(8 * count), dtype=np.uint64) >> np.uint64(11)
    return (raw.astype(np.float64) / 2.0**53 * 2.0 - 1.0) * bound


def _params(degree: int) -> Any:
    parms = seal.EncryptionParameters(seal.SCHEME_TYPE.CKKS)
    parms.set_poly_modulus_degree(degree)
    parms.set_coeff_modulus(seal.CoeffModulus.Create(degree, list(COEFF_BITS)))
    return parms


class CKKSCiphertextVector(CiphertextVector):
    """SEAL ciphertexts holding one real vector in the replicated or compact layout."""

    __slots__ = ("_size", "bound", "cts", "depth", "fingerprint", "layout", "width")

    def __init__(
        self,
        cts: list[Any],
        size: int,
        layout: str,
        width: int,
        depth: int,
        bound: float,
        fingerprint: bytes,
    ) -> None:
        self.cts = cts
        self._size = size
        self.layout = layout  # "r" replicated, "u" unreduced, "b" blinded (unreduced, final)
        self.width = width
        self.depth = depth
        self.bound = bound
        self.fingerprint = fingerprint

    @property
    def size(self) -> int:
        return self._size

    def __repr__(self) -> str:
        return f"<CKKSCiphertextVector size={self._size} layout={self.layout} depth={self.depth}>"


class _CKKSMask(Mask):
    __slots__ = ("size", "values")

    def __init__(self, values: np.ndarray, size: int) -> None:
        self.values = values
        self.size = size


class CKKSPublicKey(PublicKey):
    """Parameters and the public key (no evaluation keys: the protocol needs no rotations)."""

    backend_name: ClassVar[str] = "ckks"
    #: Released (masked) values carry the 2^-12 flooding and the float64 rounding of 2^34-sized
    #: slots summed over the blocks; training divides them by 4m, so weights still match
    #: plaintext to about 1e-4.
    tolerance: ClassVar[float] = 2e-3

    def __init__(self, params_bytes: bytes, public_bytes: bytes, width: int):
        if width < 1:
            raise ParameterError(f"CKKS block width must be positive, got {width}")
        parms = seal.EncryptionParameters(seal.SCHEME_TYPE.CKKS)
        _load(parms, None, params_bytes, "parameters")
        degree = parms.poly_modulus_degree()
        bits = [m.bit_count() for m in parms.coeff_modulus()]
        if degree not in (8192, 16384) or tuple(bits) != COEFF_BITS:
            raise RemoteProtocolError("CKKS parameters are not one of the supported sets")
        self._context = seal.SEALContext(parms, True, seal.SEC_LEVEL_TYPE.TC128)
        if not self._context.parameters_set():
            raise RemoteProtocolError("CKKS parameters were refused by SEAL")
        self._public = seal.PublicKey()
        _load(self._public, self._context, public_bytes, "public key")
        self._raw = (params_bytes, public_bytes)
        self.degree = degree
        self.slots = degree // 2
        if width > self.slots:
            raise ParameterError(f"block width {width} exceeds {self.slots} slots")
        self.width = width
        self._blind = 2.0 ** (BLIND_BUDGET_BITS - math.log2(self._per) / 2)
        self._encoder = seal.CKKSEncoder(self._context)
        self._encryptor = seal.Encryptor(self._context, self._public)
        self._evaluator = seal.Evaluator(self._context)
        self.fingerprint = hashlib.sha256(public_bytes).digest()[:8]
        self._parms_ids = []
        data = self._context.first_context_data()
        for _ in range(_MAX_DEPTH + 1):
            self._parms_ids.append(data.parms_id())
            data = data.next_context_data()
        self._zeros = store_for(self.fingerprint, (params_bytes, public_bytes), _MAX_DEPTH + 1)
        self._capacity_bits = [sum(COEFF_BITS[: len(COEFF_BITS) - 1 - d]) for d in range(3)]
        self._scales = self._measure_scales()

    def _measure_scales(self) -> list[float]:
        # SEAL's scale after a rescale is scale * 2^40 / q exactly as a double; measure it once.
        scales = [2.0**SCALE_BITS]
        ct = self._encrypt_slots(np.zeros(self.slots), 0)
        for _ in range(_MAX_DEPTH):
            ct = self._times_ones(ct)
            scales.append(ct.scale)
        return scales

    # -- key material ---------------------------------------------------------------------
    @property
    def key_bits(self) -> int:
        """For CKKS: the ring degree N (8192 or 16384)."""
        return self.degree

    def to_bytes(self) -> bytes:
        header = _PK_HEADER.pack(b"CP", 2, int(math.log2(self.degree)), self.width)
        return header + _blobs(*self._raw)

    @classmethod
    def from_bytes(cls, data: bytes) -> CKKSPublicKey:
        if len(data) < _PK_HEADER.size:
            raise RemoteProtocolError("CKKS public key is truncated")
        tag, version, _, width = _PK_HEADER.unpack_from(data)
        if tag != b"CP" or version != 2:
            raise RemoteProtocolError("not a version-2 CKKS public key")
        parts = _unblob(data, _PK_HEADER.size, 2, "public key")
        try:
            return cls(parts[0], parts[1], width)
        except ParameterError as exc:
            raise RemoteProtocolError(str(exc)) from None

    def __repr__(self) -> str:
        return f"<CKKSPublicKey N={self.degree} width={self.width} {self.fingerprint.hex()}>"

    # -- slot plumbing ----------------------------------------------------------------------
    @property
    def _per(self) -> int:
        return self.slots // self.width

    def _encode(self, slots: np.ndarray, parms_id: Any, scale: float) -> Any:
        plain = seal.Plaintext()
        self._encoder.encode(slots.tolist(), parms_id, scale, plain)
        return plain

    def _zero(self, depth: int) -> Any:
        """A fresh encryption of zero at ``depth``: from the store, else made here."""
        blob = self._zeros.take(depth)
        ct = seal.Ciphertext()
        if blob is None:
            self._encryptor.encrypt_zero(self._parms_ids[depth], ct)
        else:
            _load(ct, self._context, blob, "stored encryption of zero")
        return ct

    def _encrypt_slots(self, slots: np.ndarray, depth: int) -> Any:
        # SEAL's own encrypt is the same two steps: an encryption of zero plus the plaintext
        ct = self._zero(depth)
        ct.scale = self._scale(depth)
        plain = self._encode(slots, self._parms_ids[depth], ct.scale)
        self._evaluator.add_plain_inplace(ct, plain)
        return ct

    def precompute_zeros(self, count: int, depth: int = 0) -> None:
        """Ask the worker pool to keep about ``4 * count`` encryptions of zero ready (at most
        ``protocols._ckks_pool.MAX_RESERVE`` per depth).

        Encryptions ask for themselves; this is for callers that know what comes next.
        """
        self._zeros.want(depth, count)

    @property
    def zeros_available(self) -> int:
        """Encryptions of zero ready in the store (all depths)."""
        return sum(self._zeros.available(d) for d in range(_MAX_DEPTH + 1))

    def _scale(self, depth: int) -> float:
        return self._scales[depth] if hasattr(self, "_scales") else 2.0**SCALE_BITS

    def _multiply_plain(self, ct: Any, slots: np.ndarray) -> Any:
        """``ct * slots`` (not rescaled). SEAL refuses a plaintext that encodes to zero (the
        result would be transparent), so that case becomes a fresh encryption of zero at the
        product's level and scale."""
        plain = self._encode(slots, ct.parms_id(), 2.0**SCALE_BITS)
        if plain.is_zero():
            zeros = self._encode(np.zeros(self.slots), self._parms_ids[0], ct.scale * plain.scale)
            zero = seal.Ciphertext()
            self._encryptor.encrypt(zeros, zero)
            if ct.parms_id() != self._parms_ids[0]:
                self._evaluator.mod_switch_to_inplace(zero, ct.parms_id())
            return zero
        result = seal.Ciphertext()
        self._evaluator.multiply_plain(ct, plain, result)
        return result

    def _times_ones(self, ct: Any) -> Any:
        ones = self._encode(np.ones(self.slots), ct.parms_id(), 2.0**SCALE_BITS)
        out = seal.Ciphertext()
        self._evaluator.multiply_plain(ct, ones, out)
        self._evaluator.rescale_to_next_inplace(out)
        return out

    def _layout_slots(self, values: np.ndarray, layout: str, n_cts: int) -> list[np.ndarray]:
        """Slot arrays, one per ciphertext, for ``values`` in ``layout``."""
        if layout == "u":  # value j is the sum of slot j over the blocks: spread it over them
            slots = np.zeros(self.slots)
            per_block = np.zeros(self.width)
            per_block[: values.size] = values / self._per
            slots[: self._per * self.width] = np.tile(per_block, self._per)
            return [slots]
        out = []
        for k in range(n_cts):
            chunk = values[k * self._per : (k + 1) * self._per]
            slots = np.zeros(self.slots)
            slots[: chunk.size * self.width] = np.repeat(chunk, self.width)
            out.append(slots)
        return out

    def _n_cts(self, size: int, layout: str) -> int:
        return max(1, -(-size // self._per)) if layout == "r" else 1

    def _check_bound(self, bound: float, depth: int, what: str) -> None:
        capacity = 2.0 ** (self._capacity_bits[depth] - math.log2(self._scale(depth)) - 2)
        if not bound <= min(MAX_ABS, capacity):
            raise ParameterError(
                f"{what} may reach {bound:.3g} in magnitude, beyond the CKKS precision budget "
                f"({min(MAX_ABS, capacity):.3g} at depth {depth}); scale the data down"
            )

    def _wrap(
        self, cts: list[Any], size: int, layout: str, depth: int, bound: float
    ) -> CKKSCiphertextVector:
        return CKKSCiphertextVector(cts, size, layout, self.width, depth, bound, self.fingerprint)

    def _own(self, a: CiphertextVector) -> CKKSCiphertextVector:
        if not isinstance(a, CKKSCiphertextVector) or a.fingerprint != self.fingerprint:
            raise LocalProtocolError("ciphertext does not belong to this CKKS key")
        return a

    @staticmethod
    def _finite(values: ArrayLike, what: str) -> np.ndarray:
        array = np.asarray(values, dtype=np.float64).ravel()
        if not np.all(np.isfinite(array)):
            raise ParameterError(f"{what} must be finite numbers")
        return array

    # -- operations ---------------------------------------------------------------------------
    def encrypt(self, values: ArrayLike) -> CKKSCiphertextVector:
        array = self._finite(values, "values to encrypt")
        bound = float(np.max(np.abs(array))) if array.size else 0.0
        if bound > MAX_INPUT_ABS:
            raise ParameterError(
                f"values to encrypt must stay below {MAX_INPUT_ABS:.0f} in magnitude for CKKS"
            )
        n_cts = self._n_cts(array.size, "r")
        self._zeros.want(0, n_cts)
        cts = [self._encrypt_slots(s, 0) for s in self._layout_slots(array, "r", n_cts)]
        return self._wrap(cts, array.size, "r", 0, bound)

    def encrypt_total(self, value: float) -> CKKSCiphertextVector:
        """An unreduced size-1 vector: ``value / per`` in column 0 of every block.

        Totals are only ever added (never multiplied), so the bound is the precision budget
        (``MAX_ABS``), not the input limit of :meth:`encrypt`.
        """
        array = self._finite([value], "the total to encrypt")
        bound = abs(float(array[0]))
        self._check_bound(bound, 0, "a total")
        slots = np.zeros(self.slots)
        slots[: self._per * self.width : self.width] = array[0] / self._per
        self._zeros.want(0, 1)
        return self._wrap([self._encrypt_slots(slots, 0)], 1, "u", 0, bound)

    def _compatible(self, a: CKKSCiphertextVector, b: CKKSCiphertextVector) -> None:
        same = a.layout == b.layout and a.size == b.size and len(a.cts) == len(b.cts)
        if not same and not (a.size == b.size == 1):
            raise LocalProtocolError(
                f"cannot combine a size-{a.size} {a.layout} vector with a size-{b.size} "
                f"{b.layout} vector"
            )

    def _lift(self, a: CKKSCiphertextVector, depth: int) -> CKKSCiphertextVector:
        cts = a.cts
        for _ in range(depth - a.depth):
            cts = [self._times_ones(ct) for ct in cts]
        return self._wrap(cts, a.size, a.layout, depth, a.bound)

    def _unreduced(self, a: CKKSCiphertextVector) -> CKKSCiphertextVector:
        """A size-1 vector as an unreduced one: its value kept in slot 0 only (one product).

        Multiplying by the unit vector (not by ones) matters: a replicated scalar fills a whole
        block, and a reduction would then show it on its own in slots 1.. of the result.
        """
        if a.layout == "u":
            return a
        depth = self._product_depth(a)
        unit = np.zeros(self.slots)
        unit[0] = 1.0
        ct = self._multiply_plain(a.cts[0], unit)
        self._evaluator.rescale_to_next_inplace(ct)
        return self._wrap([ct], 1, "u", depth, a.bound)

    def _open(self, a: CiphertextVector) -> CKKSCiphertextVector:
        """``a`` if more arithmetic may follow: blinded vectors are final (masks would mix)."""
        a = self._own(a)
        if a.layout == "b":
            raise LocalProtocolError("a masked or blinded CKKS vector takes no more arithmetic")
        return a

    def add(self, a: CiphertextVector, b: CiphertextVector) -> CKKSCiphertextVector:
        a, b = self._open(a), self._open(b)
        self._compatible(a, b)
        if a.layout != b.layout:  # both of size 1 here: keep the value in one slot only
            a, b = self._unreduced(a), self._unreduced(b)
        depth = max(a.depth, b.depth)
        a, b = self._lift(a, depth), self._lift(b, depth)
        bound = a.bound + b.bound
        self._check_bound(bound, depth, "a sum")
        out = []
        for x, y in zip(a.cts, b.cts):
            ct = seal.Ciphertext()
            self._evaluator.add(x, y, ct)
            out.append(ct)
        return self._wrap(out, a.size, a.layout, depth, bound)

    def add_plain(self, a: CiphertextVector, values: ArrayLike) -> CKKSCiphertextVector:
        a = self._open(a)
        array = self._finite(values, "plaintext addend")
        if array.size != a.size:
            raise LocalProtocolError(f"cannot add {array.size} plaintexts to {a.size} values")
        bound = a.bound + (float(np.max(np.abs(array))) if array.size else 0.0)
        self._check_bound(bound, a.depth, "a sum")
        out = []
        for ct, slots in zip(a.cts, self._layout_slots(array, a.layout, len(a.cts))):
            plain = self._encode(slots, ct.parms_id(), ct.scale)
            result = seal.Ciphertext()
            self._evaluator.add_plain(ct, plain, result)
            out.append(result)
        return self._wrap(out, a.size, a.layout, a.depth, bound)

    def _product_depth(self, a: CKKSCiphertextVector) -> int:
        if a.depth >= _MAX_DEPTH:
            raise ParameterError(f"CKKS supports at most {_MAX_DEPTH} plaintext products")
        return a.depth + 1

    def mul_plain(self, a: CiphertextVector, values: ArrayLike) -> CKKSCiphertextVector:
        a = self._open(a)
        if a.layout != "r":
            raise LocalProtocolError("only replicated CKKS vectors can be multiplied")
        array = self._finite(values, "plaintext multipliers")
        if array.size != a.size:
            raise LocalProtocolError(f"cannot multiply {a.size} values by {array.size}")
        depth = self._product_depth(a)
        bound = a.bound * (float(np.max(np.abs(array))) if array.size else 0.0)
        self._check_bound(bound, depth, "a product")
        out = []
        for ct, slots in zip(a.cts, self._layout_slots(array, a.layout, len(a.cts))):
            result = self._multiply_plain(ct, slots)
            self._evaluator.rescale_to_next_inplace(result)
            out.append(result)
        return self._wrap(out, a.size, a.layout, depth, bound)

    def _summed(self, cts: Sequence[Any]) -> Any:
        """Sum of ciphertexts as a new object (inputs are not modified)."""
        if len(cts) == 1:
            out = seal.Ciphertext()
            self._evaluator.negate(cts[0], out)
            self._evaluator.negate_inplace(out)
            return out
        total = seal.Ciphertext()
        self._evaluator.add(cts[0], cts[1], total)
        for ct in cts[2:]:
            self._evaluator.add_inplace(total, ct)
        return total

    def sum(self, a: CiphertextVector) -> CKKSCiphertextVector:
        """Unreduced, like :meth:`dot_columns` (one plaintext product: it keeps one copy of
        each value, where the replicated layout holds ``width``)."""
        a = self._open(a)
        if a.layout != "r":
            raise LocalProtocolError("only replicated CKKS vectors can be summed")
        return self.dot_columns(np.ones((a.size, 1)), a)

    def dot_columns(self, matrix: np.ndarray, a: CiphertextVector) -> CKKSCiphertextVector:
        a = self._open(a)
        matrix = np.asarray(matrix, dtype=np.float64)
        if a.layout != "r" or matrix.ndim != 2 or matrix.shape[0] != a.size:
            raise LocalProtocolError(
                f"matrix of shape {matrix.shape} does not match {a.size} replicated ciphertexts"
            )
        if matrix.shape[1] > self.width:
            raise LocalProtocolError(f"{matrix.shape[1]} columns exceed block width {self.width}")
        if not np.all(np.isfinite(matrix)):
            raise ParameterError("feature values must be finite numbers")
        depth = self._product_depth(a)
        column_mass = float(np.max(np.abs(matrix).sum(axis=0))) if matrix.size else 0.0
        bound = a.bound * column_mass
        self._check_bound(bound, depth, "the gradient")
        padded = np.zeros((matrix.shape[0], self.width))
        padded[:, : matrix.shape[1]] = matrix
        products = []
        for k, ct in enumerate(a.cts):
            rows = padded[k * self._per : (k + 1) * self._per].ravel()
            slots = np.zeros(self.slots)
            slots[: rows.size] = rows
            products.append(self._multiply_plain(ct, slots))
        total = self._summed(products)
        self._evaluator.rescale_to_next_inplace(total)
        return self._wrap([total], matrix.shape[1], "u", depth, bound)

    def _blinds(self, rho: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-slot blinds for an unreduced vector whose block sums must carry ``rho`` (one per
        column): the slot array and the exact block sums of what it holds."""
        per, width = self._per, self.width
        spread = _secure_uniform(per * width, self._blind).reshape(per, width)
        blocks = rho / per + spread - spread.mean(axis=0)
        slots = np.zeros(self.slots)
        slots[: per * width] = blocks.ravel()
        tail = self.slots - per * width  # slots past the last whole block carry no value
        slots[per * width :] = _secure_uniform(tail, self._blind)
        sums = np.array([math.fsum(blocks[:, j]) for j in range(width)])
        return slots, sums

    def prepare_decryption(self, a: CiphertextVector) -> CKKSCiphertextVector:
        """Blind an unreduced vector (block sums unchanged, no slot shows a partial sum)."""
        a = self._own(a)
        if a.layout != "u":
            return a
        slots, _ = self._blinds(np.zeros(self.width))
        self._check_bound(a.bound + 2 * self._blind, a.depth, "a blinded value")
        return self._wrap(self._fresh_like(a, [slots]), a.size, "b", a.depth, a.bound)

    def _fresh_like(self, a: CKKSCiphertextVector, slot_arrays: list[np.ndarray]) -> list[Any]:
        self._zeros.want(a.depth, len(a.cts))
        out = []
        for ct, slots in zip(a.cts, slot_arrays):
            noise = self._encrypt_slots(slots, a.depth)
            result = seal.Ciphertext()
            self._evaluator.add(ct, noise, result)
            out.append(result)
        return out

    def rerandomize(self, a: CiphertextVector) -> CKKSCiphertextVector:
        a = self._own(a)
        zeros = [np.zeros(self.slots)] * len(a.cts)
        return self._wrap(self._fresh_like(a, zeros), a.size, a.layout, a.depth, a.bound)

    def mask(self, a: CiphertextVector) -> tuple[CKKSCiphertextVector, Mask]:
        a = self._open(a)
        bound = a.bound + 2.0**MASK_BITS + 2 * self._blind
        self._check_bound(bound, a.depth, "a masked value")
        if a.layout == "u":  # blinded slots whose block sums carry the masks (module docstring)
            slots, sums = self._blinds(_secure_uniform(self.width, 2.0**MASK_BITS))
            masked = self._wrap(self._fresh_like(a, [slots]), a.size, "b", a.depth, bound)
            return masked, _CKKSMask(sums[: a.size].copy(), a.size)
        # Replicated: value i is copied across its block, and every copy gets the *same* mask
        # (independent masks on copies would let the coordinator average them away).
        values = _secure_uniform(a.size, 2.0**MASK_BITS)
        slot_masks = self._layout_slots(values, "r", len(a.cts))
        masked = self._wrap(self._fresh_like(a, slot_masks), a.size, "r", a.depth, bound)
        return masked, _CKKSMask(values, a.size)

    def unmask(self, masked: bytes, mask: Mask) -> np.ndarray:
        if not isinstance(mask, _CKKSMask):
            raise LocalProtocolError("mask does not come from a CKKS key")
        if len(masked) < _MP_HEADER.size:
            raise RemoteProtocolError("masked plaintext is truncated")
        tag, version, count = _MP_HEADER.unpack_from(masked)
        if tag != b"KM" or version != 1 or count != mask.size:
            raise RemoteProtocolError(
                f"masked plaintext does not match the mask (expected {mask.size} values)"
            )
        if len(masked) != _MP_HEADER.size + 8 * count:
            raise RemoteProtocolError("masked plaintext has the wrong length")
        values = np.frombuffer(masked, dtype="<f8", offset=_MP_HEADER.size)
        if not np.all(np.isfinite(values)):
            raise RemoteProtocolError("masked plaintext holds non-finite values")
        return values - mask.values

    # -- serialisation ------------------------------------------------------------------------
    def ciphertext_to_bytes(self, a: CiphertextVector) -> bytes:
        a = self._own(a)
        header = _CT_HEADER.pack(
            b"CC",
            1,
            a.layout.encode(),
            a.width,
            a.size,
            a.depth,
            len(a.cts),
            a.bound,
            self.fingerprint,
        )
        return header + _blobs(*(_save(ct) for ct in a.cts))

    def ciphertext_from_bytes(
        self, data: bytes, *, depth: int | None = None, kind: str | None = None
    ) -> CKKSCiphertextVector:
        check_kind(kind)
        if len(data) < _CT_HEADER.size:
            raise RemoteProtocolError("CKKS ciphertext vector is truncated")
        tag, version, layout, width, size, got_depth, n_cts, bound, fingerprint = (
            _CT_HEADER.unpack_from(data)
        )
        if tag != b"CC" or version != 1 or layout not in (b"r", b"u", b"b"):
            raise RemoteProtocolError("not a version-1 CKKS ciphertext vector")
        if fingerprint != self.fingerprint or width != self.width:
            raise RemoteProtocolError("ciphertext was made under a different CKKS key")
        if depth is not None and got_depth != depth:
            raise RemoteProtocolError(f"ciphertext has depth {got_depth}, expected {depth}")
        if kind is not None and layout.decode() not in _LAYOUTS_OF_KIND[kind]:
            raise RemoteProtocolError(
                f"a CKKS {kind} vector cannot have layout {layout.decode()!r}"
            )
        if got_depth > _MAX_DEPTH or n_cts != self._n_cts(size, layout.decode()):
            raise RemoteProtocolError("CKKS ciphertext vector has an inconsistent shape")
        if layout != b"r" and size > self.width:
            raise RemoteProtocolError("compact CKKS vector larger than its block")
        if not (math.isfinite(bound) and 0 <= bound <= MAX_ABS):
            raise RemoteProtocolError("CKKS ciphertext declares an implausible magnitude")
        cts = []
        for blob in _unblob(data, _CT_HEADER.size, n_cts, "ciphertext vector"):
            ct = seal.Ciphertext()
            _load(ct, self._context, blob, "ciphertext")
            if ct.size() != 2 or ct.parms_id() != self._parms_ids[got_depth]:
                raise RemoteProtocolError("CKKS ciphertext is not at its declared level")
            if ct.scale != self._scale(got_depth):
                raise RemoteProtocolError("CKKS ciphertext has an unexpected scale")
            cts.append(ct)
        return self._wrap(cts, size, layout.decode(), got_depth, bound)


def _value_slots(slot_arrays: list[np.ndarray], size: int, layout: str, width: int) -> np.ndarray:
    """The vector's values: block starts (replicated) or block sums (blinded)."""
    if layout == "b":  # exact sums of the decoded doubles: the blinds cancel to float precision
        per = slot_arrays[0].size // width
        blocks = slot_arrays[0][: per * width].reshape(per, width)
        return np.array([math.fsum(blocks[:, j]) for j in range(size)])
    flat = np.concatenate(slot_arrays)
    return flat[::width][:size].copy()


class CKKSSecretKey(SecretKey):
    """SEAL secret key; decrypts only at the coordinator and never serialises."""

    def __init__(self, public_key: CKKSPublicKey, secret: Any) -> None:
        self._public_key = public_key
        self._decryptor = seal.Decryptor(public_key._context, secret)

    @property
    def public_key(self) -> CKKSPublicKey:
        return self._public_key

    def _slots(self, a: CiphertextVector) -> np.ndarray:
        pk = self._public_key
        if not isinstance(a, CKKSCiphertextVector) or a.fingerprint != pk.fingerprint:
            raise DecryptionError("cannot decrypt this ciphertext")
        if a.layout == "u":  # its slots are partial sums: the sender must blind it first
            raise DecryptionError("unreduced CKKS vector: the sender must call prepare_decryption")
        arrays = []
        for ct in a.cts:
            plain = seal.Plaintext()
            self._decryptor.decrypt(ct, plain)
            arrays.append(np.asarray(pk._encoder.decode_double(plain)))
        values = _value_slots(arrays, a.size, a.layout, a.width)
        if not np.all(np.abs(values) <= 2 * max(a.bound, 1.0) + 1.0):
            raise DecryptionError("decrypted value is outside its declared range")
        return values

    def decrypt(self, a: CiphertextVector) -> np.ndarray:
        return self._slots(a)

    def decrypt_masked(self, a: CiphertextVector) -> bytes:
        values = self._slots(a)
        # noise-flood and round before anything leaves the coordinator (Li-Micciancio 2021)
        noise = np.array([secrets.SystemRandom().gauss(0.0, FLOOD_SIGMA) for _ in values])
        released = np.round((values + noise) / ROUND_TO) * ROUND_TO
        return _MP_HEADER.pack(b"KM", 1, values.size) + released.astype("<f8").tobytes()


class CKKSBackend(Backend):
    """Key factory for CKKS. ``vector_width`` is the largest gradient any party computes."""

    name: ClassVar[str] = "ckks"

    def generate_secret_key(self, key_bits: int = 0, *, vector_width: int = 1) -> CKKSSecretKey:
        """``key_bits`` is ignored (the ring degree follows from ``vector_width``)."""
        if vector_width < 1:
            raise ParameterError("vector_width must be positive")
        width = vector_width  # blocks need not be a power of two: no rotations walk them
        degree = _degree_for(width)
        parms = _params(degree)
        context = seal.SEALContext(parms, True, seal.SEC_LEVEL_TYPE.TC128)
        keygen = seal.KeyGenerator(context)
        public = seal.PublicKey()
        keygen.create_public_key(public)
        public_key = CKKSPublicKey(_save(parms), _save(public), width)
        # the key generator's secret key is valid for the public key's context (same
        # parameters); it is never saved, not even to a temporary file
        return CKKSSecretKey(public_key, keygen.secret_key())

    def public_key_from_bytes(self, data: bytes) -> CKKSPublicKey:
        return CKKSPublicKey.from_bytes(data)
