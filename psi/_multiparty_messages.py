"""N-party PSI message types (type ids 140-169) and their registry.

Points travel as one ``bytes`` blob of concatenated 32-byte Ed25519 encodings per message (no
chunking: a list of ``n`` points is exactly one message of ``32 n`` bytes, even when ``n`` is 0);
positions as one blob of big-endian unsigned 64-bit integers.

Notation (see :mod:`psi._multiparty`): ``H`` hashes an ID to the prime-order group; ``a_i`` is
party ``i``'s ring key and ``r_i`` its one-time ring mask; ``F(x) = H(x)^(a_1 ... a_N)`` is the
joint pseudonym, which no party can compute alone; ``b`` is the leader's match key and
``M(x) = F(x)^b`` the match key the combiner compares; ``s_j`` is the one-time mask of a
non-leader party ``j``.

Rounds: 0 hellos (everyone to everyone), 1 the ring, 2 masked pseudonyms (non-leaders to the
leader), 3 the leader's blinded replies, 4 match keys (everyone but the combiner, to the
combiner), 5 the matched positions (combiner to leader), 6 the intersection's pseudonyms (leader
to everyone else). With ``reveal="receiver"`` round 6 is left out; with ``reveal="cardinality"``
rounds 5 and 6 carry only the intersection's size (:class:`IntersectionCount`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from protocols.wire import Message, MessageRegistry

__all__ = [
    "N_PARTY_REGISTRY",
    "BlindedMaskedPseudonyms",
    "IntersectionCount",
    "IntersectionPseudonyms",
    "LeaderMatchKeys",
    "MaskedPseudonyms",
    "MatchKeySet",
    "MatchedPositions",
    "PartyHello",
    "RingPoints",
]

N_PARTY_REGISTRY = MessageRegistry("psi-n")
"""The :class:`~protocols.wire.MessageRegistry` holding every N-party PSI message type."""

ROUND_HELLO = 0
ROUND_RING = 1
ROUND_MASKED = 2
ROUND_BLINDED = 3
ROUND_MATCH_KEYS = 4
ROUND_POSITIONS = 5
ROUND_PSEUDONYMS = 6


@N_PARTY_REGISTRY.register
@dataclass(frozen=True)
class PartyHello(Message):
    """Round 0, every party to every other party. Sent under the provisional session id ``nonce``.

    Attributes
    ----------
    suite : str
        Suite name (:data:`psi._multiparty.SUITE`); any other is rejected.
    roster_digest : bytes
        SHA-256 of the roster (party names in ring order, leader, combiner) and the reveal mode:
        32 bytes. Parties configured with different rosters or modes refuse each other's hellos.
    nonce : bytes
        16 random bytes, the sender's share of the session id and hash salt.
    n_items : int
        Number of distinct IDs the sender holds (a documented leak).
    """

    TYPE_ID: ClassVar[int] = 140
    suite: str
    roster_digest: bytes
    nonce: bytes
    n_items: int


@N_PARTY_REGISTRY.register
@dataclass(frozen=True)
class RingPoints(Message):
    """Round 1, each party to its successor in the ring.

    At hop ``h`` the list that party ``o`` started is ``H(x)^(r_o a_(o+1) ... a_(o+h-1))`` for
    ``o``'s IDs, in ``o``'s secret random order; the receiver multiplies by its ring key and
    forwards it (``h < N``), or, back at ``o`` (``h == N``), removes the mask.

    Attributes
    ----------
    hop : int
        1 for the list a party starts, up to ``N`` for the list coming home.
    points : bytes
        ``32 n_o`` bytes.
    """

    TYPE_ID: ClassVar[int] = 141
    hop: int
    points: bytes = field(repr=False)


@N_PARTY_REGISTRY.register
@dataclass(frozen=True)
class MaskedPseudonyms(Message):
    """Round 2, non-leader ``j`` to the leader: ``F(x)^(s_j)`` for ``j``'s IDs, shuffled."""

    TYPE_ID: ClassVar[int] = 142
    points: bytes = field(repr=False)


@N_PARTY_REGISTRY.register
@dataclass(frozen=True)
class BlindedMaskedPseudonyms(Message):
    """Round 3, leader to non-leader ``j``: ``F(x)^(s_j b)``, shuffled again by the leader."""

    TYPE_ID: ClassVar[int] = 143
    points: bytes = field(repr=False)


@N_PARTY_REGISTRY.register
@dataclass(frozen=True)
class LeaderMatchKeys(Message):
    """Round 4, leader to combiner: ``M(x) = F(x)^b`` for the leader's IDs in its secret order."""

    TYPE_ID: ClassVar[int] = 144
    points: bytes = field(repr=False)


@N_PARTY_REGISTRY.register
@dataclass(frozen=True)
class MatchKeySet(Message):
    """Round 4, a member (neither leader nor combiner) to the combiner: its ``M(x)``, sorted."""

    TYPE_ID: ClassVar[int] = 145
    points: bytes = field(repr=False)


@N_PARTY_REGISTRY.register
@dataclass(frozen=True)
class MatchedPositions(Message):
    """Round 5, combiner to leader: positions in :class:`LeaderMatchKeys` held by every party.

    ``positions`` holds strictly increasing big-endian unsigned 64-bit integers.
    """

    TYPE_ID: ClassVar[int] = 146
    positions: bytes = field(repr=False)


@N_PARTY_REGISTRY.register
@dataclass(frozen=True)
class IntersectionPseudonyms(Message):
    """Round 6, leader to every other party: ``F(x)`` of the intersection, in increasing order.

    That order is the common row order: each party finds its own rows by their pseudonyms.
    """

    TYPE_ID: ClassVar[int] = 147
    points: bytes = field(repr=False)


@N_PARTY_REGISTRY.register
@dataclass(frozen=True)
class IntersectionCount(Message):
    """``reveal="cardinality"`` only: the size of the intersection, and nothing else.

    Round 5 from the combiner to the leader (instead of :class:`MatchedPositions`), then round 6
    from the leader to every other party (instead of :class:`IntersectionPseudonyms`).
    """

    TYPE_ID: ClassVar[int] = 148
    count: int
