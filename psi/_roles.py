"""The two PSI roles as sans-I/O state machines.

Each role takes decoded :class:`~protocols.wire.Envelope` objects and returns the envelopes it
wants sent (message plus the session id and round it must be encoded with). Roles never touch a
transport. A message that does not fit (wrong type, session, round, chunk index or point count,
malformed or low-order points) raises :class:`RemoteProtocolError` and leaves the role exactly
as it was; calling a method in the wrong state raises :class:`LocalProtocolError`.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Sequence
from typing import Any, ClassVar, NoReturn

import numpy as np

from protocols.errors import (
    DataError,
    LocalProtocolError,
    ParameterError,
    RemoteProtocolError,
)
from protocols.wire import Envelope, Message
from psi import _ecdh
from psi._messages import (
    ROUND_HELLO,
    ROUND_INITIATOR_POINTS,
    ROUND_INITIATOR_REPLY,
    ROUND_POSITIONS,
    ROUND_RESPONDER_REPLY,
    DoubleBlindedInitiatorPoints,
    DoubleBlindedResponderPoints,
    InitiatorBlindedPoints,
    InitiatorHello,
    IntersectionPositions,
    ResponderBlindedPoints,
    ResponderHello,
)

__all__ = ["DEFAULT_CHUNK_POINTS", "PsiInitiator", "PsiResponder", "PsiState"]

DEFAULT_CHUNK_POINTS = 1 << 16
"""Points per message by default (2 MiB of points per frame)."""

MAX_CHUNK_POINTS = 1 << 22
MAX_ITEMS = (1 << 32) - 1


class PsiState(enum.Enum):
    """States of :class:`PsiInitiator` and :class:`PsiResponder`."""

    IDLE = "idle"
    """Initiator before :meth:`PsiInitiator.start`."""
    WAIT_INITIATOR_HELLO = "wait-initiator-hello"
    WAIT_RESPONDER_HELLO = "wait-responder-hello"
    WAIT_INITIATOR_POINTS = "wait-initiator-points"
    WAIT_DOUBLE_BLINDED_INITIATOR_POINTS = "wait-double-blinded-initiator-points"
    WAIT_RESPONDER_POINTS = "wait-responder-points"
    WAIT_DOUBLE_BLINDED_RESPONDER_POINTS = "wait-double-blinded-responder-points"
    SEND_POSITIONS = "send-positions"
    """Initiator: pairwise result known; :meth:`PsiInitiator.send_positions` must be called."""
    WAIT_POSITIONS = "wait-positions"
    DONE = "done"


def _dedupe(ids: Sequence[str]) -> tuple[list[str], list[int]]:
    """Distinct IDs in first-seen order and the row index of each one's first occurrence."""
    if isinstance(ids, (str, bytes)):
        raise ParameterError("ids must be a sequence of str, not a single string")
    first: dict[str, int] = {}
    for row, item in enumerate(ids):
        if not isinstance(item, str):
            raise DataError(f"IDs must be str; the item at row {row} is {type(item).__name__}")
        first.setdefault(item, row)
    return list(first), list(first.values())


def _n_chunks(n_points: int, chunk_points: int) -> int:
    return max(1, -(-n_points // chunk_points))


def _chunk_size(n_points: int, chunk_points: int, index: int) -> int:
    return max(0, min(chunk_points, n_points - index * chunk_points))


def _chunks(points: list[bytes], chunk_points: int) -> list[bytes]:
    return [
        _ecdh.pack(points[k * chunk_points : (k + 1) * chunk_points])
        for k in range(_n_chunks(len(points), chunk_points))
    ]


def _check_nonce(nonce: bytes, who: str) -> None:
    if len(nonce) != _ecdh.NONCE_BYTES:
        raise RemoteProtocolError(
            f"{who} nonce must be {_ecdh.NONCE_BYTES} bytes, got {len(nonce)}"
        )


def _check_count(n_items: int, who: str) -> None:
    if not 0 <= n_items <= MAX_ITEMS:
        raise RemoteProtocolError(f"{who} announced {n_items} items, outside [0, {MAX_ITEMS}]")


def _check_suite(suite: str) -> None:
    if suite != _ecdh.SUITE:
        raise RemoteProtocolError(f"peer uses PSI suite {suite!r}, expected {_ecdh.SUITE!r}")


def _check_unique(values: list[bytes], seen: set[bytes] | dict[bytes, int], what: str) -> None:
    # Distinct IDs give distinct double-blinded values (except with negligible probability);
    # a repeat could only come from a faulty or malicious peer and would break the common order.
    if len(set(values)) != len(values) or any(v in seen for v in values):
        raise RemoteProtocolError(f"{what}: repeated points")


def _blind_remote(scalar: bytes, points: list[bytes], what: str) -> list[bytes]:
    try:
        return _ecdh.blind(scalar, points)
    except _ecdh.LowOrderPointError:
        raise RemoteProtocolError(f"{what}: a point of small order was rejected") from None


def _blind_own(scalar: bytes, points: list[bytes]) -> list[bytes]:
    try:
        return _ecdh.blind(scalar, points)
    except _ecdh.LowOrderPointError:  # pragma: no cover - probability about 2^-250
        raise LocalProtocolError("an ID hashed to a point of small order") from None


class _PsiParty:
    """Shared bookkeeping of both roles."""

    _EXPECTED: ClassVar[dict[PsiState, tuple[type[Message], int]]]
    _STATE_BEFORE_POSITIONS: ClassVar[PsiState]

    def __init__(self, ids: Sequence[str]) -> None:
        self._ids, self._rows = _dedupe(ids)
        self._scalar: bytes | None = _ecdh.new_scalar()
        self._nonce = _ecdh.new_nonce()
        self._state = PsiState.IDLE
        self._session_id: bytes | None = None
        self._salt: bytes | None = None
        self._chunk_points = DEFAULT_CHUNK_POINTS
        self._positions_follow = False
        self._peer_n_items: int | None = None
        self._next_chunk = 0
        # The order in which our own blinded points went out: _order[j] indexes self._ids.
        self._order: list[int] = []
        # Double-blinded value of each own distinct ID (filled chunk by chunk).
        self._own_keys: list[bytes | None] = [None] * len(self._ids)
        self._own_key_set: set[bytes] = set()
        # Double-blinded values of the peer's IDs (computed locally).
        self._peer_keys: set[bytes] = set()
        self._pairwise: list[int] | None = None
        self._final: list[int] | None = None

    # -- public read-only state -----------------------------------------------------------
    @property
    def state(self) -> PsiState:
        """Current :class:`PsiState`."""
        return self._state

    @property
    def session_id(self) -> bytes | None:
        """The 16-byte session id once both nonces are known (``None`` before)."""
        return self._session_id

    @property
    def n_items(self) -> int:
        """Number of distinct own IDs."""
        return len(self._ids)

    @property
    def peer_n_items(self) -> int | None:
        """Number of distinct IDs the peer announced (``None`` before its hello)."""
        return self._peer_n_items

    @property
    def pairwise_rows(self) -> list[int]:
        """Own row indices of the pairwise intersection, in the pairwise common order.

        Raises
        ------
        LocalProtocolError
            If the point exchange has not finished.
        """
        if self._pairwise is None:
            raise LocalProtocolError(f"pairwise result not available in state {self._state.name}")
        return list(self._pairwise)

    @property
    def intersection_rows(self) -> list[int]:
        """Own row indices of the final intersection, in the final common order.

        Equals :attr:`pairwise_rows` unless positions follow (more than two parties).

        Raises
        ------
        LocalProtocolError
            If the protocol has not reached ``DONE``.
        """
        if self._final is None or self._state is not PsiState.DONE:
            raise LocalProtocolError(f"result not available in state {self._state.name}")
        return list(self._final)

    def __getstate__(self) -> NoReturn:
        raise TypeError(f"{type(self).__name__} holds a secret scalar and cannot be pickled")

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        raise TypeError(f"{type(self).__name__} holds a secret scalar and cannot be copied")

    # -- helpers --------------------------------------------------------------------------
    def _expect(self, envelope: Envelope) -> Message:
        if self._state is PsiState.IDLE:
            raise LocalProtocolError("call start() before receiving messages")
        expected = self._EXPECTED.get(self._state)
        got = type(envelope.message).__name__
        if expected is None:
            raise RemoteProtocolError(f"no message expected in state {self._state.name}, got {got}")
        cls, round_index = expected
        if not isinstance(envelope.message, cls):
            raise RemoteProtocolError(
                f"expected {cls.__name__} in state {self._state.name}, got {got}"
            )
        if envelope.round_index != round_index:
            raise RemoteProtocolError(
                f"{got}: expected round {round_index}, got round {envelope.round_index}"
            )
        # The hellos carry their own session checks (the id is derived from them).
        if cls not in (InitiatorHello, ResponderHello) and envelope.session_id != self._session_id:
            raise RemoteProtocolError(f"{got}: frame belongs to another session")
        return envelope.message

    def _expect_chunk(self, index: int, what: str) -> None:
        if index != self._next_chunk:
            raise RemoteProtocolError(
                f"{what}: expected chunk {self._next_chunk}, got chunk {index}"
            )

    def _envelopes(self, messages: list[Message], round_index: int) -> list[Envelope]:
        assert self._session_id is not None
        return [Envelope(self._session_id, round_index, m) for m in messages]

    def _own_blinded_chunks(self) -> list[bytes]:
        """Shuffle own IDs, hash and blind them: the chunks of ``H(id)^scalar``."""
        assert self._salt is not None and self._scalar is not None
        order = list(range(len(self._ids)))
        secrets.SystemRandom().shuffle(order)
        self._order = order
        points = _ecdh.hash_to_points([self._ids[i] for i in order], self._salt)
        return _chunks(_blind_own(self._scalar, points), self._chunk_points)

    def _receive_own_keys(self, chunk_index: int, blob: bytes, what: str) -> bool:
        """Store one chunk of own double-blinded values; True after the last chunk."""
        n = len(self._ids)
        self._expect_chunk(chunk_index, what)
        count = _chunk_size(n, self._chunk_points, chunk_index)
        keys = _ecdh.unpack(blob, count, what)
        _check_unique(keys, self._own_key_set, what)
        # Validation done: commit.
        start = chunk_index * self._chunk_points
        for j, key in enumerate(keys):
            self._own_keys[self._order[start + j]] = key
        self._own_key_set.update(keys)
        self._next_chunk += 1
        return self._next_chunk == _n_chunks(n, self._chunk_points)

    def _blind_peer_chunk(
        self, chunk_index: int, blob: bytes, what: str
    ) -> tuple[list[bytes], bool]:
        """Blind one chunk of the peer's points (no commit); and whether it is the last one."""
        assert self._peer_n_items is not None and self._scalar is not None
        self._expect_chunk(chunk_index, what)
        count = _chunk_size(self._peer_n_items, self._chunk_points, chunk_index)
        points = _ecdh.unpack(blob, count, what)
        keys = _blind_remote(self._scalar, points, what)
        _check_unique(keys, self._peer_keys, what)
        last = chunk_index + 1 == _n_chunks(self._peer_n_items, self._chunk_points)
        return keys, last

    def _finish_exchange(self) -> None:
        """Both key sets complete: intersect and sort by the double-blinded value."""
        self._scalar = None  # no longer needed; drop our reference to the secret
        hits = [
            (key, self._rows[i])
            for i, key in enumerate(self._own_keys)
            if key is not None and key in self._peer_keys
        ]
        hits.sort()
        self._pairwise = [row for _, row in hits]
        self._own_keys = []
        self._own_key_set = set()
        self._peer_keys = set()
        self._next_chunk = 0
        if self._positions_follow:
            self._state = self._STATE_BEFORE_POSITIONS
        else:
            self._final = self._pairwise
            self._state = PsiState.DONE


class PsiInitiator(_PsiParty):
    """Party 1 of two-party ECDH-PSI over X25519 (the leader with more than two parties).

    Flow: :meth:`start` returns :class:`InitiatorHello`; on :class:`ResponderHello` it sends
    ``H(x)^a`` (:class:`InitiatorBlindedPoints`, shuffled); it stores the returned
    :class:`DoubleBlindedInitiatorPoints`; each chunk of :class:`ResponderBlindedPoints` is
    answered with :class:`DoubleBlindedResponderPoints`. With ``positions_follow`` it then waits
    for :meth:`send_positions`.

    Parameters
    ----------
    ids : sequence of str
        This party's IDs. Duplicates are treated as a set: the first row of each ID counts.
    chunk_points : int, default 65536
        Points per message (both directions).
    positions_follow : bool, default False
        End the session with an :class:`IntersectionPositions` message (more than two parties).

    Raises
    ------
    ParameterError
        If ``chunk_points`` is out of range or ``ids`` is a single string.
    DataError
        If an ID is not a ``str``.

    Security
    --------
    Semi-honest security under the DDH assumption on Curve25519 and its twist, with SHA-256 as a
    random oracle. The responder learns the number of distinct IDs and, with its own result, the
    intersection; it never sees an ID, a hash of an ID, or the row order (points are shuffled
    with :class:`secrets.SystemRandom`). The secret scalar is drawn with :mod:`secrets`, is
    dropped after the last multiplication, and the role refuses to be pickled or copied. A
    malicious peer can make this party's result wrong (e.g. by reordering points), but malformed,
    non-canonical, repeated and small-order points are rejected.

    Examples
    --------
    >>> from psi import PsiInitiator, PsiResponder
    >>> a, b = PsiInitiator(["x", "y"]), PsiResponder(["y", "z"])
    >>> out_a = a.start()
    >>> while out_a:
    ...     out_b = [e for env in out_a for e in b.receive(env)]
    ...     out_a = [e for env in out_b for e in a.receive(env)]
    >>> a.intersection_rows, b.intersection_rows
    ([1], [0])
    """

    _EXPECTED: ClassVar[dict[PsiState, tuple[type[Message], int]]] = {
        PsiState.WAIT_RESPONDER_HELLO: (ResponderHello, ROUND_HELLO),
        PsiState.WAIT_DOUBLE_BLINDED_INITIATOR_POINTS: (
            DoubleBlindedInitiatorPoints,
            ROUND_RESPONDER_REPLY,
        ),
        PsiState.WAIT_RESPONDER_POINTS: (ResponderBlindedPoints, ROUND_RESPONDER_REPLY),
    }
    _STATE_BEFORE_POSITIONS: ClassVar[PsiState] = PsiState.SEND_POSITIONS

    def __init__(
        self,
        ids: Sequence[str],
        *,
        chunk_points: int = DEFAULT_CHUNK_POINTS,
        positions_follow: bool = False,
    ) -> None:
        if isinstance(chunk_points, bool) or not isinstance(chunk_points, int):
            raise ParameterError("chunk_points must be an int")
        if not 1 <= chunk_points <= MAX_CHUNK_POINTS:
            raise ParameterError(
                f"chunk_points must be in [1, {MAX_CHUNK_POINTS}], got {chunk_points}"
            )
        super().__init__(ids)
        if len(self._ids) > MAX_ITEMS:
            raise ParameterError(f"at most {MAX_ITEMS} distinct IDs are supported")
        self._chunk_points = chunk_points
        self._positions_follow = bool(positions_follow)

    def start(self) -> list[Envelope]:
        """Begin the session: returns the :class:`InitiatorHello` envelope.

        Raises
        ------
        LocalProtocolError
            If already started.
        """
        if self._state is not PsiState.IDLE:
            raise LocalProtocolError(f"start() called in state {self._state.name}")
        hello = InitiatorHello(
            suite=_ecdh.SUITE,
            nonce=self._nonce,
            n_items=len(self._ids),
            chunk_points=self._chunk_points,
            positions_follow=self._positions_follow,
        )
        self._state = PsiState.WAIT_RESPONDER_HELLO
        # Provisional session id: our nonce. Every later frame uses the derived id.
        return [Envelope(self._nonce, ROUND_HELLO, hello)]

    def receive(self, envelope: Envelope) -> list[Envelope]:
        """Process one decoded envelope from the responder; returns envelopes to send.

        Raises
        ------
        RemoteProtocolError
            If the message does not fit the current state; the state is unchanged.
        LocalProtocolError
            If called before :meth:`start`.
        """
        message = self._expect(envelope)
        if isinstance(message, ResponderHello):
            return self._on_hello(envelope, message)
        if isinstance(message, DoubleBlindedInitiatorPoints):
            what = "DoubleBlindedInitiatorPoints"
            if self._receive_own_keys(message.chunk_index, message.points, what):
                self._state = PsiState.WAIT_RESPONDER_POINTS
                self._next_chunk = 0
            return []
        assert isinstance(message, ResponderBlindedPoints)
        keys, last = self._blind_peer_chunk(
            message.chunk_index, message.points, "ResponderBlindedPoints"
        )
        self._peer_keys.update(keys)
        reply = DoubleBlindedResponderPoints(message.chunk_index, _ecdh.pack(keys))
        out = self._envelopes([reply], ROUND_INITIATOR_REPLY)
        self._next_chunk += 1
        if last:
            self._finish_exchange()
        return out

    def _on_hello(self, envelope: Envelope, hello: ResponderHello) -> list[Envelope]:
        _check_suite(hello.suite)
        _check_nonce(hello.nonce, "responder")
        _check_count(hello.n_items, "responder")
        if hello.nonce == self._nonce:
            raise RemoteProtocolError("responder echoed the initiator's nonce")
        session_id, salt = _ecdh.derive_session(self._nonce, hello.nonce)
        if envelope.session_id != session_id:
            raise RemoteProtocolError("ResponderHello: frame belongs to another session")
        self._session_id, self._salt = session_id, salt
        self._peer_n_items = hello.n_items
        chunks = self._own_blinded_chunks()
        self._state = PsiState.WAIT_DOUBLE_BLINDED_INITIATOR_POINTS
        self._next_chunk = 0
        messages: list[Message] = [InitiatorBlindedPoints(k, c) for k, c in enumerate(chunks)]
        return self._envelopes(messages, ROUND_INITIATOR_POINTS)

    def send_positions(self, positions: Sequence[int]) -> list[Envelope]:
        """Send the final intersection as positions in the pairwise result, in final order.

        Parameters
        ----------
        positions : sequence of int
            Distinct indices into :attr:`pairwise_rows` (of both parties, which share the
            order), listed in the final common order.

        Returns
        -------
        list of Envelope
            One :class:`IntersectionPositions`. This role's :attr:`intersection_rows` become
            ``[pairwise_rows[p] for p in positions]``.

        Raises
        ------
        LocalProtocolError
            If not in state ``SEND_POSITIONS``.
        ParameterError
            If a position is out of range or repeated.
        """
        if self._state is not PsiState.SEND_POSITIONS:
            raise LocalProtocolError(f"send_positions() called in state {self._state.name}")
        assert self._pairwise is not None
        values = [int(p) for p in positions]
        if len(set(values)) != len(values):
            raise ParameterError("positions must be distinct")
        if any(not 0 <= p < len(self._pairwise) for p in values):
            raise ParameterError(f"positions must be in [0, {len(self._pairwise)})")
        blob = np.asarray(values, dtype=">u8").tobytes()
        self._final = [self._pairwise[p] for p in values]
        self._state = PsiState.DONE
        return self._envelopes([IntersectionPositions(blob)], ROUND_POSITIONS)


class PsiResponder(_PsiParty):
    """Party 2 of two-party ECDH-PSI over X25519 (every non-leader with more than two parties).

    Flow: on :class:`InitiatorHello` it answers :class:`ResponderHello`; each chunk of
    :class:`InitiatorBlindedPoints` is answered with :class:`DoubleBlindedInitiatorPoints`, and
    after the last one it sends ``H(y)^b`` (:class:`ResponderBlindedPoints`, shuffled); it
    stores the returned :class:`DoubleBlindedResponderPoints`. If the initiator announced
    ``positions_follow`` it then waits for :class:`IntersectionPositions`.

    Parameters
    ----------
    ids : sequence of str
        This party's IDs. Duplicates are treated as a set: the first row of each ID counts.

    Raises
    ------
    ParameterError
        If ``ids`` is a single string.
    DataError
        If an ID is not a ``str``.

    Security
    --------
    As :class:`PsiInitiator`, with the roles swapped. With more than two parties this role also
    learns its pairwise intersection with the leader before the final positions arrive.
    """

    _EXPECTED: ClassVar[dict[PsiState, tuple[type[Message], int]]] = {
        PsiState.WAIT_INITIATOR_HELLO: (InitiatorHello, ROUND_HELLO),
        PsiState.WAIT_INITIATOR_POINTS: (InitiatorBlindedPoints, ROUND_INITIATOR_POINTS),
        PsiState.WAIT_DOUBLE_BLINDED_RESPONDER_POINTS: (
            DoubleBlindedResponderPoints,
            ROUND_INITIATOR_REPLY,
        ),
        PsiState.WAIT_POSITIONS: (IntersectionPositions, ROUND_POSITIONS),
    }
    _STATE_BEFORE_POSITIONS: ClassVar[PsiState] = PsiState.WAIT_POSITIONS

    def __init__(self, ids: Sequence[str]) -> None:
        super().__init__(ids)
        if len(self._ids) > MAX_ITEMS:
            raise ParameterError(f"at most {MAX_ITEMS} distinct IDs are supported")
        self._state = PsiState.WAIT_INITIATOR_HELLO

    def receive(self, envelope: Envelope) -> list[Envelope]:
        """Process one decoded envelope from the initiator; returns envelopes to send.

        Raises
        ------
        RemoteProtocolError
            If the message does not fit the current state; the state is unchanged.
        """
        message = self._expect(envelope)
        if isinstance(message, InitiatorHello):
            return self._on_hello(envelope, message)
        if isinstance(message, InitiatorBlindedPoints):
            return self._on_initiator_points(message)
        if isinstance(message, DoubleBlindedResponderPoints):
            what = "DoubleBlindedResponderPoints"
            if self._receive_own_keys(message.chunk_index, message.points, what):
                self._finish_exchange()
            return []
        assert isinstance(message, IntersectionPositions)
        return self._on_positions(message)

    def _on_hello(self, envelope: Envelope, hello: InitiatorHello) -> list[Envelope]:
        _check_suite(hello.suite)
        _check_nonce(hello.nonce, "initiator")
        _check_count(hello.n_items, "initiator")
        if not 1 <= hello.chunk_points <= MAX_CHUNK_POINTS:
            raise RemoteProtocolError(
                f"chunk_points {hello.chunk_points} outside [1, {MAX_CHUNK_POINTS}]"
            )
        if envelope.session_id != hello.nonce:
            raise RemoteProtocolError("InitiatorHello: provisional session id is not its nonce")
        if hello.nonce == self._nonce:  # pragma: no cover - a 2^-128 coincidence or a replay
            raise RemoteProtocolError("initiator used the responder's nonce")
        self._session_id, self._salt = _ecdh.derive_session(hello.nonce, self._nonce)
        self._peer_n_items = hello.n_items
        self._chunk_points = hello.chunk_points
        self._positions_follow = hello.positions_follow
        self._state = PsiState.WAIT_INITIATOR_POINTS
        self._next_chunk = 0
        reply = ResponderHello(suite=_ecdh.SUITE, nonce=self._nonce, n_items=len(self._ids))
        return self._envelopes([reply], ROUND_HELLO)

    def _on_initiator_points(self, message: InitiatorBlindedPoints) -> list[Envelope]:
        keys, last = self._blind_peer_chunk(
            message.chunk_index, message.points, "InitiatorBlindedPoints"
        )
        messages: list[Message] = [
            DoubleBlindedInitiatorPoints(message.chunk_index, _ecdh.pack(keys))
        ]
        if last:
            own = self._own_blinded_chunks()
            messages += [ResponderBlindedPoints(k, c) for k, c in enumerate(own)]
            self._scalar = None  # all our multiplications are done
        self._peer_keys.update(keys)
        self._next_chunk += 1
        if last:
            self._state = PsiState.WAIT_DOUBLE_BLINDED_RESPONDER_POINTS
            self._next_chunk = 0
        return self._envelopes(messages, ROUND_RESPONDER_REPLY)

    def _on_positions(self, message: IntersectionPositions) -> list[Envelope]:
        assert self._pairwise is not None
        blob = message.positions
        if len(blob) % 8:
            raise RemoteProtocolError(
                f"IntersectionPositions: {len(blob)} bytes is not a whole number of u64 values"
            )
        values = np.frombuffer(blob, dtype=">u8")
        n = len(self._pairwise)
        if values.size > n:
            raise RemoteProtocolError(
                f"IntersectionPositions: {values.size} positions for a pairwise result of {n}"
            )
        if values.size and int(values.max()) >= n:
            raise RemoteProtocolError(f"IntersectionPositions: a position is outside [0, {n})")
        if np.unique(values).size != values.size:
            raise RemoteProtocolError("IntersectionPositions: repeated positions")
        self._final = [self._pairwise[int(p)] for p in values]
        self._state = PsiState.DONE
        return []
