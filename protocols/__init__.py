"""Cryptography for the toolkit: HE backends, wire format, transport, errors.

Knows nothing about machine learning. ``get_backend(name)`` returns a backend by name.
"""

from __future__ import annotations

from protocols.backend import Backend, CiphertextVector, Mask, PublicKey, SecretKey
from protocols.errors import (
    DataError,
    DecryptionError,
    InsecureParametersError,
    LocalProtocolError,
    NotFittedError,
    ParameterError,
    ProtocolError,
    RemoteProtocolError,
    TransportError,
    VFLError,
)
from protocols.paillier import PaillierBackend

__all__ = [
    "BACKENDS",
    "get_backend",
    "Backend",
    "CiphertextVector",
    "Mask",
    "PublicKey",
    "SecretKey",
    "PaillierBackend",
    "VFLError",
    "ParameterError",
    "InsecureParametersError",
    "DataError",
    "NotFittedError",
    "ProtocolError",
    "LocalProtocolError",
    "RemoteProtocolError",
    "DecryptionError",
    "TransportError",
]

BACKENDS = ("paillier", "ckks")


def get_backend(name: str) -> Backend:
    """The backend called ``name``: ``"paillier"`` or ``"ckks"``."""
    if name == "paillier":
        return PaillierBackend()
    if name == "ckks":
        from protocols.ckks import CKKSBackend  # imports SEAL only when asked for

        return CKKSBackend()
    raise ParameterError(f"backend must be one of {BACKENDS}, got {name!r}")
