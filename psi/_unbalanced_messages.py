"""Unbalanced-PSI message types (type ids 170-199) and their registry.

Points travel as one ``bytes`` blob of concatenated 32-byte Ed25519 encodings per message, tags
as one blob of concatenated 16-byte tags. A list of ``n`` points is sent in chunks of
``chunk_points`` points (chosen by the client in :class:`UnbalancedClientHello`), the server's
tag set in chunks of ``chunk_tags`` tags (chosen by the server in :class:`UnbalancedServerHello`);
a list of ``n`` items is always ``max(1, ceil(n / chunk))`` messages, so even an empty list
produces one (empty) message.

Rounds: 0 hellos, 1 the server's tag set (only when the client has no matching cached copy),
2 the client's blinded queries, 3 the server's evaluations, 4 the matched tags (only when the
client agreed to reveal the intersection to the server).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from protocols.wire import Message, MessageRegistry

__all__ = [
    "UNBALANCED_REGISTRY",
    "BlindedQueries",
    "EvaluatedQueries",
    "MatchedTags",
    "ServerTags",
    "UnbalancedClientHello",
    "UnbalancedServerHello",
]

UNBALANCED_REGISTRY = MessageRegistry("psi-u")
"""The :class:`~protocols.wire.MessageRegistry` holding every unbalanced-PSI message type."""

ROUND_HELLO = 0
ROUND_TAGS = 1
ROUND_QUERIES = 2
ROUND_EVALUATED = 3
ROUND_MATCHED = 4


@UNBALANCED_REGISTRY.register
@dataclass(frozen=True)
class UnbalancedClientHello(Message):
    """Round 0, client to server. Sent under the provisional session id ``nonce``.

    Attributes
    ----------
    suite : str
        Suite name (:data:`psi._unbalanced_oprf.SUITE`); the server rejects any other.
    nonce : bytes
        16 random bytes, the client's share of the session id.
    n_items : int
        Number of distinct IDs the client will query (a documented leak).
    chunk_points : int
        Points per message for the queries and their evaluations.
    cached_key_id : bytes
        Key id of the tag set the client has cached (16 bytes), or empty.
    cached_digest : bytes
        Digest of that cached tag set (32 bytes), or empty.
    reveal_to_server : bool
        Whether the client will send the matched tags so that the server learns the
        intersection (as its own rows).
    """

    TYPE_ID: ClassVar[int] = 170
    suite: str
    nonce: bytes
    n_items: int
    chunk_points: int
    cached_key_id: bytes
    cached_digest: bytes
    reveal_to_server: bool


@UNBALANCED_REGISTRY.register
@dataclass(frozen=True)
class UnbalancedServerHello(Message):
    """Round 0, server to client. Sent under the derived session id.

    Attributes
    ----------
    suite : str
        Echo of the suite.
    nonce : bytes
        16 random bytes, the server's share of the session id.
    key_id : bytes
        16-byte id of the server's OPRF key (and salt).
    salt : bytes
        32-byte hash-to-group salt of that key (public).
    n_tags : int
        Number of tags in the server's tag set (its number of distinct IDs).
    tags_digest : bytes
        32-byte digest of the tag set (see :class:`~psi._unbalanced_oprf.TagSet`).
    chunk_tags : int
        Tags per :class:`ServerTags` message.
    tags_follow : bool
        Whether :class:`ServerTags` messages follow (false when the client's cached copy
        matches ``key_id`` and ``tags_digest``).
    """

    TYPE_ID: ClassVar[int] = 171
    suite: str
    nonce: bytes
    key_id: bytes
    salt: bytes
    n_tags: int
    tags_digest: bytes
    chunk_tags: int
    tags_follow: bool


@UNBALANCED_REGISTRY.register
@dataclass(frozen=True)
class ServerTags(Message):
    """Round 1: one chunk of the server's sorted tag set (the one-time download)."""

    TYPE_ID: ClassVar[int] = 172
    chunk_index: int
    tags: bytes = field(repr=False)


@UNBALANCED_REGISTRY.register
@dataclass(frozen=True)
class BlindedQueries(Message):
    """Round 2: one chunk of ``r_i * H(x_i)``, a fresh scalar ``r_i`` per client ID."""

    TYPE_ID: ClassVar[int] = 173
    chunk_index: int
    points: bytes = field(repr=False)


@UNBALANCED_REGISTRY.register
@dataclass(frozen=True)
class EvaluatedQueries(Message):
    """Round 3: one chunk of ``k * (r_i * H(x_i))``, in the order of the queries."""

    TYPE_ID: ClassVar[int] = 174
    chunk_index: int
    points: bytes = field(repr=False)


@UNBALANCED_REGISTRY.register
@dataclass(frozen=True)
class MatchedTags(Message):
    """Round 4, client to server (only with ``reveal_to_server``): the matched tags, sorted.

    Each tag is one of the server's own tags, so the server learns the intersection as its own
    rows, in the common order (ascending tag).
    """

    TYPE_ID: ClassVar[int] = 175
    tags: bytes = field(repr=False)
