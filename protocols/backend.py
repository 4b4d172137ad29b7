"""The one homomorphic-encryption interface the training code uses.

Training code never imports ``phe`` or ``tenseal``; it talks to a :class:`PublicKey` (encrypt and
compute on ciphertexts) and, at the coordinator only, a :class:`SecretKey`. Public and secret key
material are different types: a public key has no way to decrypt.

Masking is part of the interface because what a mask must look like depends on the scheme
(uniform in Z_n for Paillier, large reals for CKKS). A party calls :meth:`PublicKey.mask`, sends
the masked ciphertext to the coordinator, receives a :class:`MaskedPlaintext` and calls
:meth:`PublicKey.unmask` with the :class:`Mask` it kept.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike

from protocols.errors import LocalProtocolError

__all__ = ["CiphertextVector", "Mask", "PublicKey", "SecretKey", "Backend", "KINDS"]

#: What made a received ciphertext: ``encrypt`` and sums or re-randomisations of such vectors;
#: ``encrypt_total``/``dot_columns`` and sums of them; ``mask``; ``prepare_decryption``.
KINDS = ("vector", "total", "masked", "prepared")


def check_kind(kind: str | None) -> None:
    if kind is not None and kind not in KINDS:
        raise LocalProtocolError(f"kind must be one of {KINDS}, got {kind!r}")


class CiphertextVector(abc.ABC):
    """An encrypted 1-D vector of reals. Opaque outside its backend."""

    @property
    @abc.abstractmethod
    def size(self) -> int: ...

    def __len__(self) -> int:
        return self.size


class Mask:
    """The secret a party keeps to unmask what the coordinator decrypts for it."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} (secret)>"

    def __reduce__(self) -> str | tuple[Any, ...]:
        raise TypeError("masks are secret and cannot be pickled")


class PublicKey(abc.ABC):
    """Encryption and ciphertext arithmetic. Holds nothing that can decrypt.

    Every method that returns a ciphertext to be *sent* must be either :meth:`encrypt`,
    :meth:`mask` or :meth:`rerandomize`, or a sum that includes one of them: ``add_plain`` and
    ``mul_plain`` alone are deterministic and let the holder of the input subtract it again.
    """

    backend_name: ClassVar[str]
    #: Absolute tolerance the backend guarantees on decrypted results of the protocol.
    tolerance: ClassVar[float]

    @property
    @abc.abstractmethod
    def key_bits(self) -> int: ...

    @abc.abstractmethod
    def encrypt(self, values: ArrayLike) -> CiphertextVector:
        """Fresh, randomised encryption of a 1-D vector."""

    @abc.abstractmethod
    def add(self, a: CiphertextVector, b: CiphertextVector) -> CiphertextVector:
        """Element-wise ``a + b``."""

    @abc.abstractmethod
    def add_plain(self, a: CiphertextVector, values: ArrayLike) -> CiphertextVector:
        """Element-wise ``a + values``. Deterministic: re-randomise before sending."""

    @abc.abstractmethod
    def mul_plain(self, a: CiphertextVector, values: ArrayLike) -> CiphertextVector:
        """Element-wise ``a * values``. Deterministic: re-randomise before sending."""

    @abc.abstractmethod
    def sum(self, a: CiphertextVector) -> CiphertextVector:
        """Sum of all elements, as a vector of length 1."""

    @abc.abstractmethod
    def dot_columns(self, matrix: np.ndarray, a: CiphertextVector) -> CiphertextVector:
        """``matrix.T @ a`` for a plaintext ``(m, p)`` matrix and an encrypted length-m vector.

        The result may be unreduced (see :meth:`prepare_decryption`): it can be added to, masked,
        re-randomised and sent, but only :meth:`mask` or :meth:`prepare_decryption` output may be
        decrypted.
        """

    def prepare_decryption(self, a: CiphertextVector) -> CiphertextVector:
        """``a`` made ready for the coordinator to decrypt as an aggregate (the loss).

        The result decrypts to ``a``'s values and to nothing else. Packed backends may keep the
        partial sums of :meth:`dot_columns` unreduced until here (CKKS blinds them once,
        however many products were added); a decryption of the unreduced form would show those
        partial sums. :meth:`mask` prepares on its own. Default: ``a``.
        """
        return a

    def encrypt_total(self, value: float) -> CiphertextVector:
        """Fresh encryption of one total (an epoch's sum) to be added to :meth:`dot_columns`
        results. Packed backends spread it over their blocks, so that no slot holds it alone
        and its size is divided among them. Default: ``encrypt([value])``."""
        return self.encrypt([value])

    @abc.abstractmethod
    def rerandomize(self, a: CiphertextVector) -> CiphertextVector:
        """Same plaintexts, fresh randomness (adds an encryption of zero)."""

    @abc.abstractmethod
    def mask(self, a: CiphertextVector) -> tuple[CiphertextVector, Mask]:
        """Add a fresh secret mask; the result is also freshly randomised."""

    @abc.abstractmethod
    def unmask(self, masked: bytes, mask: Mask) -> np.ndarray:
        """Remove ``mask`` from the coordinator's ``SecretKey.decrypt_masked`` output."""

    @abc.abstractmethod
    def to_bytes(self) -> bytes:
        """Serialise the public key."""

    @abc.abstractmethod
    def ciphertext_to_bytes(self, a: CiphertextVector) -> bytes: ...

    @abc.abstractmethod
    def ciphertext_from_bytes(
        self, data: bytes, *, depth: int | None = None, kind: str | None = None
    ) -> CiphertextVector:
        """Strict decoding; raises ``RemoteProtocolError`` on malformed input.

        ``depth`` pins how many plaintext multiplications (``mul_plain``/``dot_columns``) the
        ciphertext may have gone through (0: fresh encryptions and sums of them); a peer cannot
        then choose the fixed-point scale (Paillier) or level (CKKS) it sends. ``kind`` (one of
        :data:`KINDS`) pins what made it, so that a vector of the wrong form is refused on
        receipt, as the sender's error, rather than in a later operation.
        """


class SecretKey(abc.ABC):
    """Decryption. Lives only at the coordinator; cannot be pickled, copied or serialised."""

    @property
    @abc.abstractmethod
    def public_key(self) -> PublicKey: ...

    @abc.abstractmethod
    def decrypt(self, a: CiphertextVector) -> np.ndarray:
        """Decrypt to reals. Only for aggregates the coordinator may learn (the loss)."""

    @abc.abstractmethod
    def decrypt_masked(self, a: CiphertextVector) -> bytes:
        """Decrypt a masked vector into an opaque payload only the mask holder can use."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} (secret)>"

    def __reduce__(self) -> str | tuple[Any, ...]:
        raise TypeError("secret keys cannot be pickled or copied")

    def __copy__(self) -> SecretKey:
        raise TypeError("secret keys cannot be copied")

    def __deepcopy__(self, memo: object) -> SecretKey:
        raise TypeError("secret keys cannot be copied")


class Backend(abc.ABC):
    """Factory for one scheme's keys."""

    name: ClassVar[str]

    @abc.abstractmethod
    def generate_secret_key(self, key_bits: int, *, vector_width: int = 1) -> SecretKey:
        """New key pair. Raises ``InsecureParametersError`` below the security floor.

        ``vector_width`` is the largest number of values a party multiplies one encrypted
        sample by (its gradient size); packed schemes lay their slots out for it.
        """

    @abc.abstractmethod
    def public_key_from_bytes(self, data: bytes) -> PublicKey:
        """Strict decoding of an announced public key."""
