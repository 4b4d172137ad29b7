"""The project's exception tree, shared by ``protocols``, ``psi`` and ``vfl``.

::

    VFLError
      ParameterError(VFLError, ValueError)        bad argument or configuration
        InsecureParametersError                   e.g. small keys without the test-only switch
      DataError(VFLError, ValueError)             bad input data (NaN, duplicate IDs, dtype ...)
      NotFittedError(VFLError, AttributeError)    estimator used before ``fit``
      ProtocolError(VFLError)
        LocalProtocolError                        this process broke the protocol (a bug or misuse)
        RemoteProtocolError                       a peer sent something malformed or unexpected
      DecryptionError(VFLError)                   opaque: never says which check failed
      TransportError(VFLError)                    timeouts, lost peers, oversize frames

Messages say what was expected and what arrived. They never contain keys, plaintext values or
ciphertext bytes.
"""

from __future__ import annotations

__all__ = [
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


class VFLError(Exception):
    """Root of every error this project raises on purpose."""


class ParameterError(VFLError, ValueError):
    """An argument or configuration value is invalid."""


class InsecureParametersError(ParameterError):
    """Parameters below the security floor (e.g. a key shorter than 2048 bits)."""


class DataError(VFLError, ValueError):
    """Input data is unusable: NaN in strict mode, duplicate IDs, non-binary labels, ..."""


class NotFittedError(VFLError, AttributeError):
    """A fitted attribute or method was used before ``fit``."""


class ProtocolError(VFLError):
    """A protocol rule was broken."""


class LocalProtocolError(ProtocolError):
    """This side tried to do something the protocol does not allow in its current state."""


class RemoteProtocolError(ProtocolError):
    """A peer sent a malformed, unexpected, replayed or out-of-order message."""


class DecryptionError(VFLError):
    """Decryption failed. Deliberately opaque about why."""


class TransportError(VFLError):
    """Moving bytes between parties failed."""
