"""PSI message types (type ids 100-199) and their registry.

Points travel as one ``bytes`` blob of concatenated 32-byte X25519 u-coordinates per message.
Point lists are split into chunks of ``chunk_points`` points (agreed in :class:`InitiatorHello`);
a list of ``n`` points is sent as ``max(1, ceil(n / chunk_points))`` messages, so even an empty
list produces one (empty) message. Rounds: 0 hellos, 1 initiator's points, 2 responder's reply,
3 initiator's reply (:class:`DoubleBlindedResponderPoints` with ``reveal="both"``,
:class:`IntersectionCardinality` with ``reveal="cardinality"``, nothing with
``reveal="receiver"``), 4 final positions (more than two parties only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from protocols.wire import Message, MessageRegistry

__all__ = [
    "REGISTRY",
    "DoubleBlindedInitiatorPoints",
    "DoubleBlindedResponderPoints",
    "InitiatorBlindedPoints",
    "InitiatorHello",
    "IntersectionCardinality",
    "IntersectionPositions",
    "ResponderBlindedPoints",
    "ResponderHello",
]

REGISTRY = MessageRegistry("psi")
"""The :class:`~protocols.wire.MessageRegistry` holding every PSI message type."""

ROUND_HELLO = 0
ROUND_INITIATOR_POINTS = 1
ROUND_RESPONDER_REPLY = 2
ROUND_INITIATOR_REPLY = 3
ROUND_POSITIONS = 4


@REGISTRY.register
@dataclass(frozen=True)
class InitiatorHello(Message):
    """Round 0, initiator to responder. Sent under the provisional session id ``nonce``.

    Attributes
    ----------
    suite : str
        Cipher suite name (one per ``hash_to_curve`` option); the responder rejects any other.
    reveal : str
        Who learns what: ``"both"``, ``"receiver"`` or ``"cardinality"``; the responder rejects
        a mode other than the one it was configured with.
    nonce : bytes
        16 random bytes, the initiator's share of the session id and salt.
    n_items : int
        Number of distinct IDs the initiator holds (a documented leak).
    chunk_points : int
        Points per message for both directions.
    positions_follow : bool
        Whether an :class:`IntersectionPositions` message ends the session (more than two parties).
    """

    TYPE_ID: ClassVar[int] = 100
    suite: str
    reveal: str
    nonce: bytes
    n_items: int
    chunk_points: int
    positions_follow: bool


@REGISTRY.register
@dataclass(frozen=True)
class ResponderHello(Message):
    """Round 0, responder to initiator. Sent under the derived session id.

    Attributes
    ----------
    suite : str
        Echo of the cipher suite.
    nonce : bytes
        16 random bytes, the responder's share of the session id and salt.
    n_items : int
        Number of distinct IDs the responder holds.
    """

    TYPE_ID: ClassVar[int] = 101
    suite: str
    nonce: bytes
    n_items: int


@REGISTRY.register
@dataclass(frozen=True)
class InitiatorBlindedPoints(Message):
    """Round 1: one chunk of ``H(x)^a`` for the initiator's IDs, in a secret random order."""

    TYPE_ID: ClassVar[int] = 102
    chunk_index: int
    points: bytes = field(repr=False)


@REGISTRY.register
@dataclass(frozen=True)
class DoubleBlindedInitiatorPoints(Message):
    """Round 2: one chunk of ``(H(x)^a)^b``.

    In the order the initiator sent ``H(x)^a``; with ``reveal="cardinality"`` in a fresh secret
    random order instead, so the initiator cannot tell which of its IDs matched.
    """

    TYPE_ID: ClassVar[int] = 103
    chunk_index: int
    points: bytes = field(repr=False)


@REGISTRY.register
@dataclass(frozen=True)
class ResponderBlindedPoints(Message):
    """Round 2: one chunk of ``H(y)^b`` for the responder's IDs, in a secret random order."""

    TYPE_ID: ClassVar[int] = 104
    chunk_index: int
    points: bytes = field(repr=False)


@REGISTRY.register
@dataclass(frozen=True)
class DoubleBlindedResponderPoints(Message):
    """Round 3: one chunk of ``(H(y)^b)^a``, in the order the responder sent ``H(y)^b``."""

    TYPE_ID: ClassVar[int] = 105
    chunk_index: int
    points: bytes = field(repr=False)


@REGISTRY.register
@dataclass(frozen=True)
class IntersectionPositions(Message):
    """Round 4, leader to another party: the final intersection in the final common order.

    ``positions`` holds big-endian unsigned 64-bit integers, each a position in the receiving
    party's pairwise intersection list (its pairwise result with the leader). No IDs cross.
    """

    TYPE_ID: ClassVar[int] = 106
    positions: bytes = field(repr=False)


@REGISTRY.register
@dataclass(frozen=True)
class IntersectionCardinality(Message):
    """Round 3 with ``reveal="cardinality"``, initiator to responder: ``|A ∩ B|``.

    Attributes
    ----------
    count : int
        The number of common IDs, as the initiator counted them.
    """

    TYPE_ID: ClassVar[int] = 107
    count: int
