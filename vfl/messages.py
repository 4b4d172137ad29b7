"""Messages of the training and scoring protocols (type ids 200-299).

Ciphertext fields hold the backend's own strict serialisation (``PublicKey.ciphertext_to_bytes``).
Each message's docstring says who sends it to whom.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocols.wire import Message, MessageRegistry

__all__ = [
    "REGISTRY",
    "PublicKeyAnnouncement",
    "RoundStart",
    "EncryptedPartialScores",
    "EncryptedResidual",
    "EncryptedCrossTerm",
    "MaskedGradient",
    "EncryptedLoss",
    "MaskedGradientDecryption",
    "TrainingComplete",
    "ScoringStart",
    "MaskedScores",
    "MaskedScoresDecryption",
]

REGISTRY = MessageRegistry("vfl")


@REGISTRY.register
@dataclass(frozen=True)
class PublicKeyAnnouncement(Message):
    """Coordinator -> every party: the backend, its public key, and the digest of the plan."""

    TYPE_ID = 201
    backend: str
    public_key: bytes
    plan_digest: bytes


@REGISTRY.register
@dataclass(frozen=True)
class RoundStart(Message):
    """Coordinator -> every party: run mini-batch ``batch`` of epoch ``epoch``."""

    TYPE_ID = 202
    epoch: int
    batch: int


@REGISTRY.register
@dataclass(frozen=True)
class EncryptedPartialScores(Message):
    """Passive party -> active party: ``[[X_p w_p]]`` per sample, and, in the epoch's last
    batch, ``[[sum (X_p w_p)^2]]`` over the epoch's samples.

    ``squared_sum`` is empty in every other batch and when scoring (no loss is computed then).
    """

    TYPE_ID = 203
    scores: bytes
    squared_sum: bytes


@REGISTRY.register
@dataclass(frozen=True)
class EncryptedResidual(Message):
    """Active party -> passive party: ``[[4 d]]`` per sample (fresh), and, with several passive
    parties, ``[[sum of later passive parties' scores]]`` for the loss's cross terms (else empty).
    """

    TYPE_ID = 204
    residual: bytes
    later_scores: bytes


@REGISTRY.register
@dataclass(frozen=True)
class EncryptedCrossTerm(Message):
    """Passive party -> active party, in the epoch's last batch: ``[[sum_s u_own,s *
    u_later,s]]`` over the epoch's samples (one ciphertext, re-randomised)."""

    TYPE_ID = 205
    value: bytes


@REGISTRY.register
@dataclass(frozen=True)
class MaskedGradient(Message):
    """Any party -> coordinator: ``[[X^T (4 d) + r]]``, one value per feature, freshly masked."""

    TYPE_ID = 206
    values: bytes


@REGISTRY.register
@dataclass(frozen=True)
class EncryptedLoss(Message):
    """Active party -> coordinator, in the epoch's last batch: ``[[8 * sum of the epoch's
    Taylor losses]]`` (each sample's loss at the weights of its batch)."""

    TYPE_ID = 207
    value: bytes


@REGISTRY.register
@dataclass(frozen=True)
class MaskedGradientDecryption(Message):
    """Coordinator -> the party that sent the masked gradient: the masked plaintext."""

    TYPE_ID = 208
    values: bytes


@REGISTRY.register
@dataclass(frozen=True)
class TrainingComplete(Message):
    """Coordinator -> every party: training stopped after ``n_iter`` epochs."""

    TYPE_ID = 209
    n_iter: int
    converged: bool


@REGISTRY.register
@dataclass(frozen=True)
class ScoringStart(Message):
    """Coordinator -> every party: score ``n_rows`` aligned rows."""

    TYPE_ID = 210
    n_rows: int


@REGISTRY.register
@dataclass(frozen=True)
class MaskedScores(Message):
    """Active party -> coordinator: ``[[sum of passive scores + r]]`` per row."""

    TYPE_ID = 211
    values: bytes


@REGISTRY.register
@dataclass(frozen=True)
class MaskedScoresDecryption(Message):
    """Coordinator -> active party: the masked plaintext of :class:`MaskedScores`."""

    TYPE_ID = 212
    values: bytes
