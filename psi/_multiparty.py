"""N-party PSI: the intersection of three or more parties' ID sets, with no pairwise leaks.

Every party ends with its own row indices of the IDs *all* parties hold, in one common order.
No party learns which IDs any other party (or any group short of all parties) holds; only the
combiner learns how many (see Security).

Roles and keys
--------------
The roster fixes the parties' ring order, a **leader** (the label holder, say) and a **combiner**
(any other party: it compares the sets but can link nothing to an identity); the rest are
**members**. All points lie in the prime-order group of Ed25519 (:mod:`psi._ed25519`), so
scalars can be inverted. Per session, every party ``i`` draws a ring key ``a_i`` and a
one-time ring mask ``r_i``; the leader draws a match key ``b``; every other party a one-time
mask ``s_i``. Write ``H(x)`` for the hash of ``x`` to the group (salted per session),
``F(x) = H(x)^(a_1 ... a_N)`` for the joint pseudonym (no party can compute it alone, so no
party can test guessed IDs) and ``M(x) = F(x)^b`` for the match key.

Protocol
--------
0. Hellos (:class:`PartyHello`), everyone to everyone: a nonce, the number of distinct IDs and a
   digest of the roster. The session id and the hash salt are hashes of the roster digest and
   all nonces in ring order, so every party contributes and a frame of another session (or
   roster) is rejected.
1. Ring (:class:`RingPoints`): party ``o`` sends ``H(x)^(r_o)`` for its IDs, shuffled, to its
   successor; every other party multiplies by its ring key and passes the list on, in the same
   order; back home (hop ``N``) ``o`` multiplies by ``a_o / r_o``, which gives ``F(x)`` of each
   of its IDs. The parties on the way see only values under ``o``'s one-time mask. (Each party
   folds the next step's exponent, ``b`` or ``s_o``, into this multiplication.)
2. A non-leader ``j`` sends ``F(x)^(s_j)``, shuffled, to the leader (:class:`MaskedPseudonyms`).
3. The leader multiplies by ``b``, shuffles again and returns the list
   (:class:`BlindedMaskedPseudonyms`); ``j`` multiplies by ``1 / s_j`` and so holds the *set*
   ``M(X_j)`` without knowing which of its IDs gives which key.
4. The leader sends ``M(x)`` of its IDs in a secret random order ``pi`` to the combiner
   (:class:`LeaderMatchKeys`); each member sends its set ``M(X_j)``, sorted
   (:class:`MatchKeySet`); the combiner keeps its own set ``M(X_C)``.
5. The combiner sends the leader the positions ``p`` (in ``pi`` order) whose key is in every
   party's set (:class:`MatchedPositions`); the leader maps them to its IDs.
6. The leader sends ``F(x)`` of the intersection, sorted, to every other party
   (:class:`IntersectionPseudonyms`). Each party finds its rows by their pseudonyms, so all list
   the intersection in the order of ``F``.

Reveal modes (``reveal``, part of the roster digest, so all parties must agree): ``"both"`` as
above; ``"receiver"`` skips step 6, so only the leader learns the intersection (the members
learn only the set sizes, the combiner its usual counts); ``"cardinality"`` replaces steps 5 and
6 by the count alone (:class:`IntersectionCount`, combiner to leader, then leader to everyone
else), so every party learns the intersection's size and nobody any identity.

Messages on one channel (sender to receiver) follow a fixed sequence, which each party checks.
Across channels they may arrive in any order a network allows; :meth:`NPartyPsiParty.ready` says
whether the next message from a sender can be processed now, and a runner holds frames until it
can (:func:`run_n_party` does).

Security
--------
Semi-honest parties that do not collude; DDH in the Ed25519 prime-order group, SHA-512 as a
random oracle. What each party learns:

- **Everyone**: the roster, every party's number of distinct IDs, and the final intersection (as
  its own rows) and hence its size, as far as ``reveal`` allows.
- **Leader**: nothing more. It receives only one-time-masked points and as many positions as the
  intersection has elements.
- **Members**: nothing more. Each receives its own ring list back, its own keys (reshuffled)
  and the intersection's pseudonyms.
- **Combiner**: the size of every region of the Venn diagram of the parties' sets (for each
  group of parties, how many IDs exactly that group holds), because it compares all the match
  keys. It links no key to an ID: not the leader's (``pi`` and ``b`` are secret), not a
  member's (it never sees a member's IDs), not its own (the leader reshuffled them under ``b``).

Collusion: the leader and the combiner together can remove ``b`` and learn every other party's
intersection with their own IDs; choose a combiner the others trust not to collude with the
leader. Any other pair learns nothing about a third party beyond the above. Malicious parties
are out of scope: each can choose its input, and the leader and combiner can make results wrong
or reveal more to the others (a leader can send more pseudonyms than the intersection has).
Received points are checked (length, valid prime-order group element, no repeats, sortedness
where required) and anything off raises :class:`~protocols.errors.RemoteProtocolError` with the
role unchanged.
"""

from __future__ import annotations

import collections
import enum
import hashlib
import itertools
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, NoReturn

import numpy as np

from protocols.errors import (
    DataError,
    LocalProtocolError,
    ParameterError,
    RemoteProtocolError,
)
from protocols.transport import InMemoryTransport
from protocols.wire import Envelope, Message
from psi import _ed25519 as ed
from psi._multiparty_messages import (
    N_PARTY_REGISTRY,
    ROUND_BLINDED,
    ROUND_HELLO,
    ROUND_MASKED,
    ROUND_MATCH_KEYS,
    ROUND_POSITIONS,
    ROUND_PSEUDONYMS,
    ROUND_RING,
    BlindedMaskedPseudonyms,
    IntersectionCount,
    IntersectionPseudonyms,
    LeaderMatchKeys,
    MaskedPseudonyms,
    MatchedPositions,
    MatchKeySet,
    PartyHello,
    RingPoints,
)

__all__ = [
    "MAX_ITEMS",
    "MIN_PARTIES",
    "REVEAL_MODES",
    "SUITE",
    "NPartyPsiOutput",
    "NPartyPsiParty",
    "NPartyPsiResult",
    "NPartyPsiState",
    "NPartyRole",
    "Outgoing",
    "run_n_party",
]

SUITE = "psi-n/ed25519-elligator2-sha512/v1"
"""Suite name in :class:`PartyHello`: group, hash to group, protocol version."""

MIN_PARTIES = 3
"""Fewest parties: leader, combiner and at least one member (two parties use ECDH-PSI)."""

MAX_ITEMS = 1 << 23
"""Most distinct IDs per party: a list of points is one frame (256 MiB at this size)."""

REVEAL_MODES = ("both", "receiver", "cardinality")
"""Accepted values of ``reveal``: who learns the intersection, or only its size.

``"both"``: every party learns its rows. ``"receiver"``: only the leader learns its rows (no
:class:`IntersectionPseudonyms` is sent). ``"cardinality"``: nobody learns an identity; every
party learns the intersection's size (:class:`IntersectionCount`).
"""

NONCE_BYTES = 16
_P = ed.POINT_BYTES
_TAG = b"vfl-he/" + SUITE.encode("ascii")
_ROSTER_TAG = _TAG + b"/roster\x00"
_SESSION_TAG = _TAG + b"/session-id\x00"
_SALT_TAG = _TAG + b"/salt\x00"


class NPartyRole(enum.Enum):
    """What a party does in :class:`NPartyPsiParty` (fixed by the roster)."""

    LEADER = "leader"
    """Holds the match key ``b``; learns the intersection first (as positions)."""
    COMBINER = "combiner"
    """Compares every party's match keys; links none of them to an ID."""
    MEMBER = "member"
    """Any other party."""


class NPartyPsiState(enum.Enum):
    """States of :class:`NPartyPsiParty`."""

    IDLE = "idle"
    """Before :meth:`NPartyPsiParty.start`."""
    WAIT_HELLOS = "wait-hellos"
    """Hello sent; waiting for every other party's."""
    RING = "ring"
    """Session established; passing ring lists on until the own list comes home."""
    WAIT_REPLY = "wait-reply"
    """Non-leader: masked pseudonyms sent; waiting for the leader's reply."""
    WAIT_MATCH_KEYS = "wait-match-keys"
    """Combiner: own match keys known; waiting for the leader's or a member's."""
    WAIT_POSITIONS = "wait-positions"
    """Leader: match keys sent; answering masked pseudonyms; waiting for the positions (the count
    with ``reveal="cardinality"``)."""
    WAIT_PSEUDONYMS = "wait-pseudonyms"
    """Non-leader: waiting for the intersection's pseudonyms (``reveal="both"``)."""
    WAIT_COUNT = "wait-count"
    """Non-leader with ``reveal="cardinality"``: waiting for the leader's count."""
    DONE = "done"


class Outgoing(NamedTuple):
    """An envelope a role wants sent, and to whom."""

    receiver: str
    envelope: Envelope


class _Step(NamedTuple):
    """One expected message on a channel: its type, round and (ring only) hop."""

    cls: type[Message]
    round_index: int
    hop: int = 0


_S = NPartyPsiState
# The transition table: the states in which each message type may be processed. Which sender
# may send which type, in which order, is the per-channel schedule (NPartyPsiParty._schedule).
_ACCEPT_IN: dict[type[Message], frozenset[NPartyPsiState]] = {
    PartyHello: frozenset({_S.WAIT_HELLOS}),
    RingPoints: frozenset({_S.RING}),
    MaskedPseudonyms: frozenset({_S.RING, _S.WAIT_POSITIONS}),
    BlindedMaskedPseudonyms: frozenset({_S.WAIT_REPLY}),
    LeaderMatchKeys: frozenset({_S.RING, _S.WAIT_REPLY, _S.WAIT_MATCH_KEYS}),
    MatchKeySet: frozenset({_S.RING, _S.WAIT_REPLY, _S.WAIT_MATCH_KEYS}),
    MatchedPositions: frozenset({_S.WAIT_POSITIONS}),
    IntersectionPseudonyms: frozenset({_S.WAIT_PSEUDONYMS}),
    IntersectionCount: frozenset({_S.WAIT_POSITIONS, _S.WAIT_COUNT}),
}


def roster_digest(
    parties: Sequence[str], leader: str, combiner: str, reveal: str = "both"
) -> bytes:
    """SHA-256 of the roster: party names in ring order, the leader, the combiner, the mode."""
    h = hashlib.sha256(_ROSTER_TAG)
    h.update(len(parties).to_bytes(4, "big"))
    for name in parties:
        raw = name.encode("utf-8")
        h.update(len(raw).to_bytes(4, "big") + raw)
    h.update(parties.index(leader).to_bytes(4, "big"))
    h.update(parties.index(combiner).to_bytes(4, "big"))
    raw = reveal.encode("ascii")
    h.update(len(raw).to_bytes(4, "big") + raw)
    return h.digest()


def derive_session(digest: bytes, nonces: Sequence[bytes]) -> tuple[bytes, bytes]:
    """Session id (16 bytes) and hash salt (32 bytes) from the roster digest and all nonces."""
    material = digest + b"".join(nonces)
    session_id = hashlib.sha256(_SESSION_TAG + material).digest()[:16]
    salt = hashlib.sha256(_SALT_TAG + material).digest()
    return session_id, salt


def _check_reveal(reveal: str) -> None:
    if reveal not in REVEAL_MODES:
        raise ParameterError(f"reveal must be one of {REVEAL_MODES}, got {reveal!r}")


def _check_roster(parties: Sequence[str], leader: str, combiner: str) -> tuple[str, ...]:
    if isinstance(parties, (str, bytes)) or not isinstance(parties, Sequence):
        raise ParameterError("parties must be a sequence of party names")
    names = tuple(parties)
    if not all(isinstance(n, str) and n for n in names):
        raise ParameterError("party names must be non-empty str")
    if len(set(names)) != len(names):
        raise ParameterError("party names must be unique")
    if len(names) < MIN_PARTIES:
        raise ParameterError(f"N-party PSI needs at least {MIN_PARTIES} parties, got {len(names)}")
    if leader not in names:
        raise ParameterError(f"leader {leader!r} is not one of the parties")
    if combiner not in names:
        raise ParameterError(f"combiner {combiner!r} is not one of the parties")
    if leader == combiner:
        raise ParameterError("the leader and the combiner must be different parties")
    return names


def _dedupe(ids: Sequence[str]) -> tuple[list[bytes], list[int]]:
    """UTF-8 of the distinct IDs in first-seen order, and the row of each one's first occurrence."""
    if isinstance(ids, (str, bytes)):
        raise ParameterError("ids must be a sequence of str, not a single string")
    first: dict[str, int] = {}
    for row, item in enumerate(ids):
        if not isinstance(item, str):
            raise DataError(f"IDs must be str; the item at row {row} is {type(item).__name__}")
        first.setdefault(item, row)
    encoded = []
    for item, row in first.items():
        try:
            encoded.append(item.encode("utf-8"))
        except UnicodeEncodeError:  # lone surrogates
            raise DataError(f"the ID at row {row} is not encodable as UTF-8") from None
    if len(encoded) > MAX_ITEMS:
        raise ParameterError(f"at most {MAX_ITEMS} distinct IDs are supported")
    return encoded, list(first.values())


def _split(blob: bytes) -> list[bytes]:
    return [blob[i : i + _P] for i in range(0, len(blob), _P)]


def _shuffled(points: list[bytes]) -> list[bytes]:
    out = list(points)
    secrets.SystemRandom().shuffle(out)
    return out


def _points(blob: bytes, count: int, what: str) -> list[bytes]:
    """Validated, distinct points of ``blob`` (``count`` of them); raises RemoteProtocolError."""
    ed.validate_points(blob, count, what)
    points = _split(blob)
    if len(set(points)) != len(points):
        raise RemoteProtocolError(f"{what}: repeated points")
    return points


def _sorted_points(blob: bytes, max_count: int, what: str) -> list[bytes]:
    """Validated points in strictly increasing byte order, at most ``max_count`` of them."""
    if len(blob) % _P:
        raise RemoteProtocolError(f"{what}: {len(blob)} bytes is not a whole number of points")
    count = len(blob) // _P
    if count > max_count:
        raise RemoteProtocolError(f"{what}: {count} points, expected at most {max_count}")
    ed.validate_points(blob, count, what)
    points = _split(blob)
    if any(x >= y for x, y in itertools.pairwise(points)):
        raise RemoteProtocolError(f"{what}: points are not in strictly increasing order")
    return points


def _mult_own(scalar: bytes, blob: bytes) -> bytes:
    """Multiply points this party made itself (a failure would be a local bug)."""
    try:
        return ed.scalar_mult(scalar, blob)
    except RemoteProtocolError:  # pragma: no cover - probability about 2^-250
        raise LocalProtocolError("an own point multiplied to the identity") from None


@dataclass(frozen=True)
class NPartyPsiOutput:
    """What one party learned from a finished N-party PSI session.

    Attributes
    ----------
    reveal : str
        The session's mode: ``"both"``, ``"receiver"`` or ``"cardinality"``.
    rows : tuple of int or None
        This party's row indices (into its own input; first row of a duplicated ID) of the
        intersection of all parties, in the common order; ``None`` when this party does not learn
        the intersection (``"cardinality"``; every party but the leader with ``"receiver"``).
    cardinality : int or None
        The intersection's size (distinct IDs), or ``None`` when this party does not learn it (the
        members with ``"receiver"``; the combiner always learns it).
    party_sizes : dict of str to int
        Every party's number of distinct IDs (every party learns them).
    """

    reveal: str
    rows: tuple[int, ...] | None = field(repr=False)
    cardinality: int | None
    party_sizes: dict[str, int]


class NPartyPsiParty:
    """One party of N-party PSI (leader, combiner or member, by the roster).

    A sans-I/O state machine: :meth:`start` returns the hellos, :meth:`receive` takes one decoded
    envelope and its sender and returns the :class:`Outgoing` envelopes to send. Every party is
    built with the same roster. See :mod:`psi._multiparty` for the protocol.

    Parameters
    ----------
    name : str
        This party's name in the roster.
    ids : sequence of str
        This party's IDs. Duplicates count once, at their first row.
    parties : sequence of str
        All party names, in ring order (at least three).
    leader, combiner : str
        The leader and the combiner: two different parties of ``parties``.
    reveal : {"both", "receiver", "cardinality"}, default "both"
        Who learns what (see :data:`REVEAL_MODES`); part of the roster digest, so every party
        must be built with the same mode.

    Raises
    ------
    ParameterError
        A bad roster (fewer than three parties, repeated or empty names, an unknown name, leader
        equal to combiner), an unknown ``reveal``, ``ids`` a single string, or more than
        :data:`MAX_ITEMS` IDs.
    DataError
        If an ID is not a ``str`` or not encodable as UTF-8.

    Security
    --------
    Semi-honest, non-colluding parties; DDH in the Ed25519 prime-order group. Each party learns
    every party's number of distinct IDs and, as ``reveal`` allows, the final intersection (or
    only its size); the combiner also learns the
    size of every region of the Venn diagram of the sets, without identities; the leader and the
    combiner together could learn more, so they must not collude (see :mod:`psi._multiparty`).
    No ID or hash of an ID is sent, only points under secret scalars, shuffled with
    :class:`secrets.SystemRandom`. All scalars are drawn with :mod:`secrets` for this session
    only and dropped after their last use; the role refuses to be pickled or copied.

    Examples
    --------
    >>> from psi._multiparty import NPartyPsiParty
    >>> from psi._multiparty_messages import N_PARTY_REGISTRY as REG
    >>> data = {"bank": ["u1", "u2", "u3"], "shop": ["u3", "u1"], "telco": ["u1", "u3", "u9"]}
    >>> roster = dict(parties=list(data), leader="bank", combiner="shop")
    >>> roles = {n: NPartyPsiParty(n, ids, **roster) for n, ids in data.items()}
    >>> queue = [(n, out) for n, role in roles.items() for out in role.start()]
    >>> while queue:
    ...     sender, (receiver, env) = queue.pop(0)
    ...     frame = REG.encode(env.message, session_id=env.session_id,
    ...                        round_index=env.round_index)
    ...     queue += [(receiver, o) for o in roles[receiver].receive(sender, REG.decode(frame))]
    >>> [[data[n][r] for r in roles[n].intersection_rows] for n in data] == [
    ...     [data["bank"][r] for r in roles["bank"].intersection_rows]] * 3
    True
    >>> sorted(data["shop"][r] for r in roles["shop"].intersection_rows)
    ['u1', 'u3']
    """

    def __init__(
        self,
        name: str,
        ids: Sequence[str],
        *,
        parties: Sequence[str],
        leader: str,
        combiner: str,
        reveal: str = "both",
    ) -> None:
        names = _check_roster(parties, leader, combiner)
        _check_reveal(reveal)
        if name not in names:
            raise ParameterError(f"party {name!r} is not one of the parties")
        self._items, self._rows = _dedupe(ids)
        self._name = name
        self._parties = names
        self._index = names.index(name)
        self._leader = leader
        self._combiner = combiner
        self._role = (
            NPartyRole.LEADER
            if name == leader
            else NPartyRole.COMBINER
            if name == combiner
            else NPartyRole.MEMBER
        )
        self._reveal = reveal
        self._digest = roster_digest(names, leader, combiner, reveal)
        self._nonce = secrets.token_bytes(NONCE_BYTES)
        # Secrets for this session only; each is dropped after its last use.
        self._ring_key: bytes | None = ed.new_scalar()  # a_i
        self._ring_mask: bytes | None = ed.new_scalar()  # r_i, one-time
        # The leader's match key b, or a non-leader's one-time mask s_i.
        self._match_scalar: bytes | None = ed.new_scalar()
        self._state = NPartyPsiState.IDLE
        self._nonces: dict[str, bytes] = {}
        self._sizes: dict[str, int] = {name: len(self._items)}
        self._session_id: bytes | None = None
        self._salt: bytes | None = None
        self._peers = tuple(n for n in names if n != name)
        self._schedules = {peer: self._schedule(peer) for peer in self._peers}
        self._cursor = dict.fromkeys(self._peers, 0)
        # Own distinct items (indices into self._items) in the order the own ring list went out.
        self._ring_order: list[int] = []
        # Leader: the distinct item and match key at each position of LeaderMatchKeys; replies
        # held until LeaderMatchKeys has gone out; the parties already answered.
        self._pi_items: list[int] = []
        self._pi_keys: list[bytes] = []
        self._held: dict[str, bytes] = {}
        self._answered: set[str] = set()
        # Non-leaders: F(x)^(s_i) of each own distinct item.
        self._masked_index: dict[bytes, int] = {}
        # Combiner: the leader's match keys, the intersection of the non-leaders' key sets so
        # far, whose sets are in, and how many positions went to the leader.
        self._leader_keys: list[bytes] | None = None
        self._common: set[bytes] | None = None
        self._sets_in: set[str] = set()
        self._n_positions: int | None = None
        self._final: list[int] | None = None
        self._cardinality: int | None = None

    # -- public read-only state -----------------------------------------------------------
    @property
    def name(self) -> str:
        """This party's name."""
        return self._name

    @property
    def role(self) -> NPartyRole:
        """This party's :class:`NPartyRole`."""
        return self._role

    @property
    def state(self) -> NPartyPsiState:
        """Current :class:`NPartyPsiState`."""
        return self._state

    @property
    def session_id(self) -> bytes | None:
        """The 16-byte session id once every hello is in (``None`` before)."""
        return self._session_id

    @property
    def n_items(self) -> int:
        """Number of distinct own IDs."""
        return len(self._items)

    @property
    def party_sizes(self) -> dict[str, int]:
        """Number of distinct IDs of each party whose hello has arrived (and this party's)."""
        return dict(self._sizes)

    @property
    def reveal(self) -> str:
        """The reveal mode (``"both"``, ``"receiver"`` or ``"cardinality"``)."""
        return self._reveal

    @property
    def output(self) -> NPartyPsiOutput | None:
        """What this party learned (:class:`NPartyPsiOutput`), or ``None`` until ``DONE``."""
        if self._state is not NPartyPsiState.DONE:
            return None
        rows = None if self._final is None else tuple(self._final)
        return NPartyPsiOutput(self._reveal, rows, self._cardinality, dict(self._sizes))

    @property
    def intersection_rows(self) -> list[int]:
        """Own row indices of the intersection of all parties, in the common order.

        Raises
        ------
        LocalProtocolError
            If the protocol has not reached ``DONE``, or this party does not learn the
            intersection in this reveal mode.
        """
        if self._final is None or self._state is not NPartyPsiState.DONE:
            raise LocalProtocolError(
                f"result not available in state {self._state.name} (reveal={self._reveal!r})"
            )
        return list(self._final)

    def ready(self, sender: str) -> bool:
        """Whether the next message expected from ``sender`` can be processed now.

        A runner delivers a sender's frames in order and holds them while this is ``False``
        (messages from different senders may overtake each other on a network). Delivering
        while it is ``False`` raises :class:`RemoteProtocolError`.
        """
        step = self._next_step(sender)
        return step is not None and self._acceptable(step)

    def __getstate__(self) -> NoReturn:
        raise TypeError(f"{type(self).__name__} holds secret scalars and cannot be pickled")

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        raise TypeError(f"{type(self).__name__} holds secret scalars and cannot be copied")

    # -- transitions ----------------------------------------------------------------------
    def start(self) -> list[Outgoing]:
        """Begin the session: returns a :class:`PartyHello` for every other party.

        Raises
        ------
        LocalProtocolError
            If already started.
        """
        if self._state is not NPartyPsiState.IDLE:
            raise LocalProtocolError(f"start() called in state {self._state.name}")
        hello = PartyHello(
            suite=SUITE, roster_digest=self._digest, nonce=self._nonce, n_items=len(self._items)
        )
        self._state = NPartyPsiState.WAIT_HELLOS
        # Provisional session id: our nonce. Every later frame uses the derived id.
        return [Outgoing(peer, Envelope(self._nonce, ROUND_HELLO, hello)) for peer in self._peers]

    def receive(self, sender: str, envelope: Envelope) -> list[Outgoing]:
        """Process one decoded envelope from ``sender``; returns the envelopes to send.

        Parameters
        ----------
        sender : str
            The party the frame came from, as the (authenticated) transport says.
        envelope : Envelope
            The decoded frame.

        Returns
        -------
        list of Outgoing
            Envelopes to send, with their receivers, in sending order.

        Raises
        ------
        RemoteProtocolError
            If the message does not fit: unknown sender, wrong type, round or hop for that
            sender's channel, not processable in the current state, another session, malformed
            content. The role is left unchanged.
        LocalProtocolError
            If called before :meth:`start`.
        """
        if self._state is NPartyPsiState.IDLE:
            raise LocalProtocolError("call start() before receiving messages")
        message = envelope.message
        got = type(message).__name__
        if sender not in self._cursor:
            raise RemoteProtocolError(
                f"{got} from {sender!r}, which is not a peer of {self._name!r}"
            )
        step = self._next_step(sender)
        if step is None:
            raise RemoteProtocolError(f"no further message expected from {sender!r}, got {got}")
        if not isinstance(message, step.cls):
            raise RemoteProtocolError(f"expected {step.cls.__name__} from {sender!r}, got {got}")
        if envelope.round_index != step.round_index:
            raise RemoteProtocolError(
                f"{got} from {sender!r}: expected round {step.round_index}, "
                f"got round {envelope.round_index}"
            )
        if isinstance(message, RingPoints) and message.hop != step.hop:
            raise RemoteProtocolError(
                f"RingPoints from {sender!r}: expected hop {step.hop}, got hop {message.hop}"
            )
        if not self._acceptable(step):
            raise RemoteProtocolError(
                f"{got} from {sender!r} cannot be processed in state {self._state.name}"
            )
        if not isinstance(message, PartyHello) and envelope.session_id != self._session_id:
            raise RemoteProtocolError(f"{got} from {sender!r}: frame belongs to another session")
        # Each handler validates everything before it changes anything.
        if isinstance(message, PartyHello):
            out = self._on_hello(sender, envelope, message)
        elif isinstance(message, RingPoints):
            out = self._on_ring(message)
        elif isinstance(message, MaskedPseudonyms):
            out = self._on_masked(sender, message)
        elif isinstance(message, BlindedMaskedPseudonyms):
            out = self._on_blinded(message)
        elif isinstance(message, LeaderMatchKeys):
            out = self._on_leader_keys(message)
        elif isinstance(message, MatchKeySet):
            out = self._on_key_set(sender, message)
        elif isinstance(message, MatchedPositions):
            out = self._on_positions(message)
        elif isinstance(message, IntersectionCount):
            out = self._on_count(message)
        else:
            assert isinstance(message, IntersectionPseudonyms)
            out = self._on_pseudonyms(message)
        self._cursor[sender] += 1
        return out

    # -- schedule -------------------------------------------------------------------------
    def _schedule(self, sender: str) -> tuple[_Step, ...]:
        """The messages this party receives from ``sender``, in the order ``sender`` sends them."""
        n = len(self._parties)
        steps = [_Step(PartyHello, ROUND_HELLO)]
        if sender == self._parties[self._index - 1]:
            steps += [_Step(RingPoints, ROUND_RING, hop) for hop in range(1, n + 1)]
        if self._role is NPartyRole.LEADER:
            steps.append(_Step(MaskedPseudonyms, ROUND_MASKED))
            if sender == self._combiner:
                cardinality = self._reveal == "cardinality"
                steps.append(
                    _Step(IntersectionCount if cardinality else MatchedPositions, ROUND_POSITIONS)
                )
        elif sender == self._leader:
            if self._role is NPartyRole.COMBINER:
                # The leader sends its match keys before answering anyone (see _on_ring).
                steps.append(_Step(LeaderMatchKeys, ROUND_MATCH_KEYS))
            steps.append(_Step(BlindedMaskedPseudonyms, ROUND_BLINDED))
            if self._reveal == "both":
                steps.append(_Step(IntersectionPseudonyms, ROUND_PSEUDONYMS))
            elif self._reveal == "cardinality":
                steps.append(_Step(IntersectionCount, ROUND_PSEUDONYMS))
        elif self._role is NPartyRole.COMBINER:
            steps.append(_Step(MatchKeySet, ROUND_MATCH_KEYS))
        return tuple(steps)

    def _next_step(self, sender: str) -> _Step | None:
        schedule = self._schedules.get(sender)
        if schedule is None or self._cursor[sender] >= len(schedule):
            return None
        return schedule[self._cursor[sender]]

    def _acceptable(self, step: _Step) -> bool:
        if self._state not in _ACCEPT_IN[step.cls]:
            return False
        if step.cls is MatchedPositions or (
            step.cls is IntersectionCount and self._role is NPartyRole.LEADER
        ):
            # The combiner cannot have every key set before every non-leader was answered.
            return len(self._answered) == len(self._peers)
        return True

    def _out(self, receiver: str, round_index: int, message: Message) -> Outgoing:
        assert self._session_id is not None
        return Outgoing(receiver, Envelope(self._session_id, round_index, message))

    # -- handlers -------------------------------------------------------------------------
    def _on_hello(self, sender: str, envelope: Envelope, hello: PartyHello) -> list[Outgoing]:
        if hello.suite != SUITE:
            raise RemoteProtocolError(f"{sender!r} uses suite {hello.suite!r}, expected {SUITE!r}")
        if hello.roster_digest != self._digest:
            raise RemoteProtocolError(
                f"{sender!r} is configured with another roster (parties, order, leader, "
                "combiner or reveal mode differ)"
            )
        if len(hello.nonce) != NONCE_BYTES:
            raise RemoteProtocolError(
                f"{sender!r}: nonce must be {NONCE_BYTES} bytes, got {len(hello.nonce)}"
            )
        if envelope.session_id != hello.nonce:
            raise RemoteProtocolError(
                f"PartyHello from {sender!r}: provisional id is not its nonce"
            )
        if not 0 <= hello.n_items <= MAX_ITEMS:
            raise RemoteProtocolError(
                f"{sender!r} announced {hello.n_items} items, outside [0, {MAX_ITEMS}]"
            )
        if hello.nonce == self._nonce or hello.nonce in self._nonces.values():
            raise RemoteProtocolError(f"{sender!r} reused another party's nonce")
        nonces = {**self._nonces, sender: hello.nonce}
        sizes = {**self._sizes, sender: hello.n_items}
        if len(nonces) < len(self._peers):
            self._nonces, self._sizes = nonces, sizes
            return []
        # Last hello: derive the session and start our ring list.
        ordered = [self._nonce if p == self._name else nonces[p] for p in self._parties]
        session_id, salt = derive_session(self._digest, ordered)
        order = list(range(len(self._items)))
        secrets.SystemRandom().shuffle(order)
        assert self._ring_mask is not None
        hashed = ed.hash_to_group([self._items[i] for i in order], salt)
        masked = _mult_own(self._ring_mask, hashed)
        self._nonces, self._sizes = nonces, sizes
        self._session_id, self._salt = session_id, salt
        self._ring_order = order
        self._state = NPartyPsiState.RING
        successor = self._parties[(self._index + 1) % len(self._parties)]
        return [self._out(successor, ROUND_RING, RingPoints(hop=1, points=masked))]

    def _on_ring(self, message: RingPoints) -> list[Outgoing]:
        n = len(self._parties)
        origin = self._parties[(self._index - message.hop) % n]
        what = f"RingPoints hop {message.hop} (list of {origin!r})"
        _points(message.points, self._sizes[origin], what)
        assert self._ring_key is not None and self._ring_mask is not None
        assert self._match_scalar is not None
        if message.hop < n:
            successor = self._parties[(self._index + 1) % n]
            passed = ed.scalar_mult(self._ring_key, message.points)
            return [
                self._out(successor, ROUND_RING, RingPoints(hop=message.hop + 1, points=passed))
            ]
        # Our own list is home: F(x) = list^(a / r). Fold in the next exponent (b or s).
        exponent = ed.multiply_scalars(
            ed.multiply_scalars(self._ring_key, ed.invert(self._ring_mask)), self._match_scalar
        )
        values = _split(ed.scalar_mult(exponent, message.points))
        if self._role is NPartyRole.LEADER:
            pi = list(range(len(values)))
            secrets.SystemRandom().shuffle(pi)
            keys = [values[k] for k in pi]  # M(x) = F(x)^b in the secret order pi
            out = [self._out(self._combiner, ROUND_MATCH_KEYS, LeaderMatchKeys(b"".join(keys)))]
            # Replies held until now go out after LeaderMatchKeys, which fixes the order of the
            # leader-to-combiner channel.
            for peer in self._peers:
                if peer in self._held:
                    out.append(
                        self._out(peer, ROUND_BLINDED, BlindedMaskedPseudonyms(self._held[peer]))
                    )
            self._pi_items = [self._ring_order[k] for k in pi]
            self._pi_keys = keys
            self._answered |= set(self._held)
            self._held = {}
            self._state = NPartyPsiState.WAIT_POSITIONS
        else:
            masked = {v: self._ring_order[k] for k, v in enumerate(values)}  # F(x)^s
            request = MaskedPseudonyms(b"".join(_shuffled(values)))
            out = [self._out(self._leader, ROUND_MASKED, request)]
            self._masked_index = masked
            self._state = NPartyPsiState.WAIT_REPLY
        self._ring_key = self._ring_mask = None
        self._ring_order = []
        return out

    def _on_masked(self, sender: str, message: MaskedPseudonyms) -> list[Outgoing]:
        points = _points(message.points, self._sizes[sender], f"MaskedPseudonyms from {sender!r}")
        assert self._match_scalar is not None
        # (F^s)^b, shuffled again so that the sender cannot tell which of its IDs gives which key.
        reply = b"".join(_shuffled(_split(ed.scalar_mult(self._match_scalar, b"".join(points)))))
        if self._state is NPartyPsiState.RING:
            self._held[sender] = reply
            return []
        self._answered.add(sender)
        return [self._out(sender, ROUND_BLINDED, BlindedMaskedPseudonyms(reply))]

    def _on_blinded(self, message: BlindedMaskedPseudonyms) -> list[Outgoing]:
        _points(message.points, len(self._items), "BlindedMaskedPseudonyms")
        assert self._match_scalar is not None
        keys = _split(ed.scalar_mult(ed.invert(self._match_scalar), message.points))
        if self._role is NPartyRole.MEMBER:
            self._state = self._final_wait()
            if self._state is NPartyPsiState.DONE:  # "receiver": members learn nothing more
                self._match_scalar = None
                self._masked_index = {}
            return [
                self._out(self._combiner, ROUND_MATCH_KEYS, MatchKeySet(b"".join(sorted(keys))))
            ]
        return self._combine(self._name, set(keys), self._leader_keys)

    def _on_leader_keys(self, message: LeaderMatchKeys) -> list[Outgoing]:
        keys = _points(message.points, self._sizes[self._leader], "LeaderMatchKeys")
        return self._combine(None, None, keys)

    def _on_key_set(self, sender: str, message: MatchKeySet) -> list[Outgoing]:
        keys = _sorted_points(message.points, self._sizes[sender], f"MatchKeySet from {sender!r}")
        if len(keys) != self._sizes[sender]:
            raise RemoteProtocolError(
                f"MatchKeySet from {sender!r}: {len(keys)} keys, expected {self._sizes[sender]}"
            )
        return self._combine(sender, set(keys), self._leader_keys)

    def _combine(
        self, owner: str | None, key_set: set[bytes] | None, leader_keys: list[bytes] | None
    ) -> list[Outgoing]:
        """Combiner: add one party's key set (or the leader's keys); match once all are in.

        Called after validation; only commits.
        """
        common = self._common
        sets_in = set(self._sets_in)
        if owner is not None and key_set is not None:
            common = key_set if common is None else common & key_set
            sets_in.add(owner)
        if self._state is NPartyPsiState.WAIT_REPLY and owner == self._name:
            state = NPartyPsiState.WAIT_MATCH_KEYS
        else:
            state = self._state
        if (
            leader_keys is None
            or len(sets_in) < len(self._peers)  # every non-leader, the combiner included
            or state is not NPartyPsiState.WAIT_MATCH_KEYS
        ):
            self._common, self._sets_in, self._leader_keys = common, sets_in, leader_keys
            self._state = state
            return []
        assert common is not None
        positions = [p for p, key in enumerate(leader_keys) if key in common]
        self._common, self._sets_in, self._leader_keys = None, sets_in, None
        self._n_positions = len(positions)
        self._state = self._final_wait()
        if self._state is NPartyPsiState.DONE:  # "receiver": the combiner knows the count
            self._cardinality = len(positions)
            self._match_scalar = None
            self._masked_index = {}
        message: Message
        if self._reveal == "cardinality":
            message = IntersectionCount(len(positions))
        else:
            message = MatchedPositions(np.asarray(positions, dtype=">u8").tobytes())
        return [self._out(self._leader, ROUND_POSITIONS, message)]

    def _final_wait(self) -> NPartyPsiState:
        """A non-leader's state once its part is done: what it still waits for, by mode."""
        if self._reveal == "both":
            return NPartyPsiState.WAIT_PSEUDONYMS
        if self._reveal == "cardinality":
            return NPartyPsiState.WAIT_COUNT
        return NPartyPsiState.DONE

    def _on_positions(self, message: MatchedPositions) -> list[Outgoing]:
        blob = message.positions
        what = "MatchedPositions"
        if len(blob) % 8:
            raise RemoteProtocolError(f"{what}: {len(blob)} bytes is not a whole number of u64")
        values = np.frombuffer(blob, dtype=">u8")
        n = len(self._pi_keys)
        if values.size > n:
            raise RemoteProtocolError(f"{what}: {values.size} positions for {n} match keys")
        if values.size > 1 and not bool(np.all(values[1:] > values[:-1])):
            raise RemoteProtocolError(f"{what}: positions are not strictly increasing")
        if values.size and int(values[-1]) >= n:
            raise RemoteProtocolError(f"{what}: a position is outside [0, {n})")
        positions = [int(p) for p in values]
        assert self._match_scalar is not None
        # F(x) = M(x)^(1/b) for the intersection only; sorting by F gives the common order.
        keys = b"".join(self._pi_keys[p] for p in positions)
        pseudonyms = _split(_mult_own(ed.invert(self._match_scalar), keys))
        pairs = sorted(zip(pseudonyms, (self._pi_items[p] for p in positions)))
        blob_out = b"".join(f for f, _ in pairs)
        out = (
            [
                self._out(peer, ROUND_PSEUDONYMS, IntersectionPseudonyms(blob_out))
                for peer in self._peers
            ]
            if self._reveal == "both"
            else []  # "receiver": only the leader learns the intersection
        )
        self._final = [self._rows[i] for _, i in pairs]
        self._cardinality = len(pairs)
        self._match_scalar = None
        self._pi_keys, self._pi_items = [], []
        self._state = NPartyPsiState.DONE
        return out

    def _on_pseudonyms(self, message: IntersectionPseudonyms) -> list[Outgoing]:
        what = "IntersectionPseudonyms"
        pseudonyms = _sorted_points(message.points, len(self._items), what)
        if self._n_positions is not None and len(pseudonyms) != self._n_positions:
            raise RemoteProtocolError(
                f"{what}: {len(pseudonyms)} pseudonyms for an intersection of {self._n_positions}"
            )
        assert self._match_scalar is not None
        masked = _split(ed.scalar_mult(self._match_scalar, message.points))
        items = [self._masked_index.get(v) for v in masked]
        if any(i is None for i in items):
            raise RemoteProtocolError(f"{what}: a pseudonym is not one of this party's")
        self._final = [self._rows[i] for i in items if i is not None]
        self._cardinality = len(self._final)
        self._match_scalar = None
        self._masked_index = {}
        self._state = NPartyPsiState.DONE
        return []

    def _on_count(self, message: IntersectionCount) -> list[Outgoing]:
        """``reveal="cardinality"``: the combiner's count (leader) or the leader's (others)."""
        count = message.count
        bound = min(self._sizes.values())
        what = "IntersectionCount"
        if not 0 <= count <= bound:
            raise RemoteProtocolError(f"{what}: {count} is outside [0, {bound}]")
        if self._n_positions is not None and count != self._n_positions:
            raise RemoteProtocolError(
                f"{what}: {count}, but the intersection has {self._n_positions} elements"
            )
        out = []
        if self._role is NPartyRole.LEADER:
            out = [
                self._out(peer, ROUND_PSEUDONYMS, IntersectionCount(count)) for peer in self._peers
            ]
            self._pi_keys, self._pi_items = [], []
        else:
            self._masked_index = {}
        self._cardinality = count
        self._match_scalar = None
        self._state = NPartyPsiState.DONE
        return out


# -- in-process driver ------------------------------------------------------------------------
class NPartyPsiResult(NamedTuple):
    """Result of :func:`run_n_party`.

    Attributes
    ----------
    rows : dict of str to list of int
        Each party's row indices (into its own input) of the intersection of all parties, all in
        one common order: ``ids[p][rows[p][k]]`` is the same ID for every party ``p``. Only the
        parties that learn their rows are keys: every party with ``reveal="both"``, the leader
        with ``"receiver"``, none with ``"cardinality"`` (see :attr:`outputs` for ``None``).
    transport : InMemoryTransport
        The transport, with the transcript of every frame.
    cardinality : int
        The intersection's size (distinct IDs), whatever the mode.
    reveal : str
        The mode the session ran in.
    outputs : dict of str to NPartyPsiOutput
        What each party learned: ``outputs[p].rows`` is ``None`` where ``p`` learns no rows,
        ``outputs[p].cardinality`` is ``None`` where ``p`` does not learn the size.
    """

    rows: dict[str, list[int]]
    transport: InMemoryTransport
    cardinality: int = 0
    reveal: str = "both"
    outputs: dict[str, NPartyPsiOutput] = {}  # noqa: RUF012 - NamedTuple default, never mutated


def _send(transport: InMemoryTransport, sender: str, out: list[Outgoing]) -> None:
    for receiver, env in out:
        frame = N_PARTY_REGISTRY.encode(
            env.message, session_id=env.session_id, round_index=env.round_index
        )
        transport.send(
            sender,
            receiver,
            frame,
            message_type=type(env.message).__name__,
            round_index=env.round_index,
        )


def _pump(transport: InMemoryTransport, roles: Mapping[str, NPartyPsiParty]) -> None:
    """Deliver frames until none is left, holding each sender's frames until its role is ready.

    This is what a networked runner does too: frames from one sender stay in order, frames from
    different senders may overtake each other.
    """
    inbox: dict[tuple[str, str], collections.deque[bytes]] = {
        (me, peer): collections.deque() for me in roles for peer in roles if me != peer
    }
    while True:
        for me in roles:
            while (item := transport.receive(me)) is not None:
                peer, frame = item
                if (me, peer) not in inbox:
                    raise RemoteProtocolError(f"{me!r} got a frame from unknown party {peer!r}")
                inbox[(me, peer)].append(frame)
        progressed = False
        for (me, peer), queue in inbox.items():
            while queue and roles[me].ready(peer):
                envelope = N_PARTY_REGISTRY.decode(queue.popleft())
                _send(transport, me, roles[me].receive(peer, envelope))
                progressed = True
        if progressed:
            continue
        for (me, peer), queue in inbox.items():
            if queue:  # never ready: delivering it raises RemoteProtocolError
                roles[me].receive(peer, N_PARTY_REGISTRY.decode(queue.popleft()))
                raise LocalProtocolError(f"{me!r} accepted a frame it was not ready for")
        return


def run_n_party(
    ids: Mapping[str, Sequence[str]],
    *,
    leader: str | None = None,
    combiner: str | None = None,
    keep_payloads: bool = False,
    reveal: str = "both",
) -> NPartyPsiResult:
    """Intersect the ID sets of three or more parties in process, with no pairwise leaks.

    Runs :class:`NPartyPsiParty` for every party over an :class:`InMemoryTransport`; every
    message is encoded and decoded with :data:`N_PARTY_REGISTRY`, as across hosts.

    Parameters
    ----------
    ids : mapping of str to sequence of str
        Each party's IDs by party name; the mapping's order is the ring order. Duplicates count
        once (first row).
    leader : str, optional
        The leader (e.g. the label holder). Default: the first party.
    combiner : str, optional
        The combiner, another party. Default: the first party that is not the leader.
    keep_payloads : bool, default False
        Keep each frame's bytes in the transcript (audits, tests).
    reveal : {"both", "receiver", "cardinality"}, default "both"
        Who learns the intersection: every party, only the leader, or nobody (every party learns
        only its size). See :data:`REVEAL_MODES`.

    Returns
    -------
    NPartyPsiResult
        ``(rows, transport, cardinality, reveal, outputs)``; ``rows[p]`` indexes party ``p``'s
        input, all in one common order (that of the secret pseudonyms, so random-looking), for
        the parties that learn rows. An empty intersection gives empty lists: the caller decides
        whether that is an error.

    Raises
    ------
    ParameterError
        Fewer than three parties, an unknown leader or combiner, the same party as both, an
        unknown ``reveal``, or ``ids`` of a party given as a single string.
    DataError
        If an ID is not a ``str`` or not encodable as UTF-8.

    Security
    --------
    Every party learns each party's number of distinct IDs and the final intersection; the
    combiner also learns the size of every region of the sets' Venn diagram, but no identity.
    No party learns a pairwise intersection. Semi-honest, and the leader and the combiner must
    not collude (see :class:`NPartyPsiParty`). All parties run in this process here: use it for
    alignment and tests; across organisations, run one :class:`NPartyPsiParty` at each party.

    Examples
    --------
    >>> from psi._multiparty import run_n_party
    >>> ids = {"bank": ["u1", "u2", "u3"], "shop": ["u3", "u1", "u4"], "telco": ["u1", "u3"]}
    >>> rows = run_n_party(ids).rows
    >>> sorted(ids["shop"][r] for r in rows["shop"])
    ['u1', 'u3']
    >>> [ids["bank"][r] for r in rows["bank"]] == [ids["telco"][r] for r in rows["telco"]]
    True
    """
    if not isinstance(ids, Mapping):
        raise ParameterError("ids must be a mapping of party name to IDs")
    names = list(ids)
    if len(names) < MIN_PARTIES:
        raise ParameterError(f"N-party PSI needs at least {MIN_PARTIES} parties, got {len(names)}")
    if leader is None:
        leader = names[0]
    if leader not in ids:
        raise ParameterError(f"leader {leader!r} is not one of the parties")
    if combiner is None:
        combiner = next(name for name in names if name != leader)
    if combiner not in ids:
        raise ParameterError(f"combiner {combiner!r} is not one of the parties")
    _check_reveal(reveal)
    roles = {
        name: NPartyPsiParty(
            name, ids[name], parties=names, leader=leader, combiner=combiner, reveal=reveal
        )
        for name in names
    }
    transport = InMemoryTransport(names, keep_payloads=keep_payloads)
    for name, role in roles.items():
        _send(transport, name, role.start())
    _pump(transport, roles)
    for name, role in roles.items():
        if role.state is not NPartyPsiState.DONE:
            raise LocalProtocolError(f"{name!r}: protocol stalled in state {role.state.name}")
    outputs = {}
    for name, role in roles.items():
        output = role.output
        assert output is not None
        outputs[name] = output
    cardinality = outputs[leader].cardinality
    assert cardinality is not None
    rows = {name: list(output.rows) for name, output in outputs.items() if output.rows is not None}
    return NPartyPsiResult(rows, transport, cardinality, reveal, outputs)
