"""The two PSI roles as sans-I/O state machines.

Each role takes decoded :class:`~protocols.wire.Envelope` objects and returns the envelopes it
wants sent (message plus the session id and round it must be encoded with). Roles never touch a
transport; the heavy arithmetic goes to a :class:`~psi._engine.PsiEngine` they are given (or an
in-process one). A message that does not fit (wrong type, session, round, chunk index or point
count, malformed, small-order or repeated points) raises :class:`RemoteProtocolError` and leaves
the role exactly as it was, with no result; calling a method in the wrong state raises
:class:`LocalProtocolError`.

Per party, IDs are kept as one UTF-8 blob with ``int64`` offsets and points as blobs viewed with
NumPy: no Python object per ID once a role is constructed.

Reveal modes
------------
``"both"``
    Both parties learn the intersection (their own rows of it, in one common order).
``"receiver"``
    Only the initiator learns it. The responder learns the initiator's set size and nothing
    else; the initiator does not send the responder's double-blinded points back.
``"cardinality"``
    Both learn ``|A ∩ B|`` only. The responder returns the initiator's double-blinded points in
    a fresh secret random order, so the initiator can count matches but not tell which of its
    IDs matched; the initiator then sends the count to the responder.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NoReturn

import numpy as np
import pandas as pd

from protocols.errors import (
    DataError,
    LocalProtocolError,
    ParameterError,
    RemoteProtocolError,
)
from protocols.wire import Envelope, Message
from psi import _ecdh
from psi._engine import PsiEngine
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
    IntersectionCardinality,
    IntersectionPositions,
    ResponderBlindedPoints,
    ResponderHello,
)

__all__ = [
    "DEFAULT_CHUNK_POINTS",
    "REVEAL_MODES",
    "PsiInitiator",
    "PsiOutput",
    "PsiResponder",
    "PsiState",
]

DEFAULT_CHUNK_POINTS = 1 << 16
"""Points per message by default (2 MiB of points per frame)."""

REVEAL_MODES = ("both", "receiver", "cardinality")
"""Accepted values of ``reveal``: who learns the intersection, or only its size."""

MAX_CHUNK_POINTS = 1 << 22
MAX_ITEMS = (1 << 32) - 1
_PB = _ecdh.POINT_BYTES


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
    WAIT_CARDINALITY = "wait-cardinality"
    """Responder with ``reveal="cardinality"``: waits for the initiator's count."""
    SEND_POSITIONS = "send-positions"
    """Initiator: pairwise result known; :meth:`PsiInitiator.send_positions` must be called."""
    WAIT_POSITIONS = "wait-positions"
    DONE = "done"


@dataclass(frozen=True, eq=False)
class PsiOutput:
    """What one party learned from a finished two-party PSI session.

    Attributes
    ----------
    reveal : str
        The session's mode: ``"both"``, ``"receiver"`` or ``"cardinality"``.
    rows : numpy.ndarray of int64 or None
        This party's row indices (into its own input; first row of a duplicated ID) of the
        intersection, in the order both parties share (read-only array). ``None`` when this
        party does not learn the intersection (``"cardinality"``; the responder with
        ``"receiver"``).
    cardinality : int or None
        ``|A ∩ B|`` (distinct IDs), or ``None`` when this party does not learn it (the
        responder with ``"receiver"``).
    n_items, peer_n_items : int
        Number of distinct IDs of this party and of the peer (both parties learn both).

    Security
    --------
    Holds only what the protocol reveals to this party; ``rows`` index the party's own data.
    """

    reveal: str
    rows: np.ndarray | None = field(repr=False)
    cardinality: int | None
    n_items: int
    peer_n_items: int


def _prepare_ids(ids: Sequence[str]) -> tuple[bytes, np.ndarray, np.ndarray]:
    """Distinct IDs as (UTF-8 blob, offsets) and the row of each one's first occurrence."""
    if isinstance(ids, (str, bytes)):
        raise ParameterError("ids must be a sequence of str, not a single string")
    try:
        values = np.fromiter(ids, dtype=object, count=len(ids))
    except TypeError:
        raise ParameterError("ids must be a sequence of str") from None
    if values.size and pd.api.types.infer_dtype(values, skipna=False) != "string":
        for row, item in enumerate(values):
            if not isinstance(item, str):
                raise DataError(f"IDs must be str; the item at row {row} is {type(item).__name__}")
    duplicated = pd.Index(values, dtype=object).duplicated(keep="first")
    rows = np.flatnonzero(~duplicated).astype(np.int64)
    distinct = values[rows]
    del values
    try:
        blob, offsets = _ecdh.encode_ids(distinct)
    except UnicodeEncodeError:
        for k, item in enumerate(distinct):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise DataError(
                    f"the ID at row {int(rows[k])} is not valid Unicode (lone surrogate)"
                ) from None
        raise  # pragma: no cover
    return blob, offsets, rows


def _n_chunks(n_points: int, chunk_points: int) -> int:
    return max(1, -(-n_points // chunk_points))


def _chunk_size(n_points: int, chunk_points: int, index: int) -> int:
    return max(0, min(chunk_points, n_points - index * chunk_points))


def _chunks(blob: bytes, chunk_points: int) -> list[bytes]:
    step = chunk_points * _PB
    n = len(blob) // _PB
    return [blob[k * step : (k + 1) * step] for k in range(_n_chunks(n, chunk_points))]


def _check_nonce(nonce: bytes, who: str) -> None:
    if len(nonce) != _ecdh.NONCE_BYTES:
        raise RemoteProtocolError(
            f"{who} nonce must be {_ecdh.NONCE_BYTES} bytes, got {len(nonce)}"
        )


def _check_count(n_items: int, who: str) -> None:
    if not 0 <= n_items <= MAX_ITEMS:
        raise RemoteProtocolError(f"{who} announced {n_items} items, outside [0, {MAX_ITEMS}]")


def _check_parameters(reveal: str, hash_to_curve: str) -> None:
    if reveal not in REVEAL_MODES:
        raise ParameterError(f"reveal must be one of {REVEAL_MODES}, got {reveal!r}")
    if hash_to_curve not in _ecdh.HASH_TO_CURVE:
        raise ParameterError(
            f"hash_to_curve must be one of {_ecdh.HASH_TO_CURVE}, got {hash_to_curve!r}"
        )


def session_context(suite: str, reveal: str, chunk_points: int, positions_follow: bool) -> bytes:
    """The hello parameters bound into the session id and salt."""
    return f"{suite}|{reveal}|{chunk_points}|{int(positions_follow)}".encode()


class _PsiParty:
    """Shared bookkeeping of both roles."""

    _EXPECTED: ClassVar[dict[PsiState, tuple[type[Message], int]]]
    _STATE_BEFORE_POSITIONS: ClassVar[PsiState]

    def __init__(
        self,
        ids: Sequence[str],
        *,
        reveal: str,
        hash_to_curve: str,
        engine: PsiEngine | None,
    ) -> None:
        _check_parameters(reveal, hash_to_curve)
        if engine is not None and not isinstance(engine, PsiEngine):
            raise ParameterError("engine must be a PsiEngine")
        self._id_blob, self._id_offsets, self._rows = _prepare_ids(ids)
        if self._rows.size > MAX_ITEMS:
            raise ParameterError(f"at most {MAX_ITEMS} distinct IDs are supported")
        self._reveal = reveal
        self._hash_to_curve = hash_to_curve
        self._suite = _ecdh.suite_for(hash_to_curve)
        self._engine = engine if engine is not None else PsiEngine(n_jobs=1)
        self._scalar: bytes | None = _ecdh.new_scalar()
        self._nonce = _ecdh.new_nonce()
        self._state = PsiState.IDLE
        self._session_id: bytes | None = None
        self._salt: bytes | None = None
        self._chunk_points = DEFAULT_CHUNK_POINTS
        self._positions_follow = False
        self._peer_n_items: int | None = None
        self._next_chunk = 0
        # Sent position j of our blinded points holds our distinct ID _order[j].
        self._order: np.ndarray | None = None
        # Our IDs' double-blinded values, in the order we sent them (filled chunk by chunk).
        self._own_keys = bytearray()
        # The peer's IDs' double-blinded values, as we computed them, in the order received.
        self._peer_keys = bytearray()
        # Both lists sorted, once complete (the repeat checks sort them anyway).
        self._own_sorted: np.ndarray | None = None
        self._peer_sorted: np.ndarray | None = None
        self._pairwise: np.ndarray | None = None
        self._result: PsiOutput | None = None

    # -- public read-only state -----------------------------------------------------------
    @property
    def state(self) -> PsiState:
        """Current :class:`PsiState`."""
        return self._state

    @property
    def reveal(self) -> str:
        """The reveal mode (``"both"``, ``"receiver"`` or ``"cardinality"``)."""
        return self._reveal

    @property
    def suite(self) -> str:
        """The cipher suite name (depends on ``hash_to_curve``)."""
        return self._suite

    @property
    def session_id(self) -> bytes | None:
        """The 16-byte session id once both nonces are known (``None`` before)."""
        return self._session_id

    @property
    def n_items(self) -> int:
        """Number of distinct own IDs."""
        return int(self._rows.size)

    @property
    def peer_n_items(self) -> int | None:
        """Number of distinct IDs the peer announced (``None`` before its hello)."""
        return self._peer_n_items

    @property
    def result(self) -> PsiOutput | None:
        """What this party learned (:class:`PsiOutput`), or ``None`` until ``DONE``."""
        return self._result

    @property
    def pairwise_rows(self) -> list[int]:
        """Own row indices of the pairwise intersection, in the pairwise common order.

        Raises
        ------
        LocalProtocolError
            If the point exchange has not finished, or this party does not learn the
            intersection in this reveal mode.
        """
        if self._pairwise is None:
            raise LocalProtocolError(
                f"pairwise result not available in state {self._state.name} "
                f"(reveal={self._reveal!r})"
            )
        return self._pairwise.tolist()

    @property
    def intersection_rows(self) -> list[int]:
        """Own row indices of the final intersection, in the final common order.

        Equals :attr:`pairwise_rows` unless positions follow (more than two parties).

        Raises
        ------
        LocalProtocolError
            If the protocol has not reached ``DONE``, or this party does not learn the
            intersection in this reveal mode.
        """
        if self._result is None or self._result.rows is None:
            raise LocalProtocolError(
                f"result not available in state {self._state.name} (reveal={self._reveal!r})"
            )
        return self._result.rows.tolist()

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

    def _expect_chunk(self, index: int, n_points: int, what: str) -> tuple[int, bool]:
        """Points expected in chunk ``index`` and whether it is the last one."""
        n_chunks = _n_chunks(n_points, self._chunk_points)
        if index != self._next_chunk:
            raise RemoteProtocolError(
                f"{what}: expected chunk {self._next_chunk} of {n_chunks}, got chunk {index}"
            )
        return _chunk_size(n_points, self._chunk_points, index), index + 1 == n_chunks

    def _envelopes(self, messages: Sequence[Message], round_index: int) -> list[Envelope]:
        assert self._session_id is not None
        return [Envelope(self._session_id, round_index, m) for m in messages]

    def _derive(self, initiator_nonce: bytes, responder_nonce: bytes) -> tuple[bytes, bytes]:
        context = session_context(
            self._suite, self._reveal, self._chunk_points, self._positions_follow
        )
        return _ecdh.derive_session(initiator_nonce, responder_nonce, context)

    def _own_blinded_blob(self) -> tuple[bytes, np.ndarray]:
        """Hash and blind own IDs; returns ``H(id)^scalar`` in a secret random order, and it."""
        assert self._salt is not None and self._scalar is not None
        try:
            natural = self._engine.hash_and_multiply(
                self._hash_to_curve, self._salt, self._scalar, self._id_blob, self._id_offsets
            )
        except _ecdh.LowOrderPointError:  # pragma: no cover - probability about 2^-250
            raise LocalProtocolError("an ID hashed to a point of small order") from None
        order = _ecdh.permutation(self.n_items)
        return np.frombuffer(natural, dtype="S32")[order].tobytes(), order

    @staticmethod
    def _check_unique(
        chunk: np.ndarray, filled: bytearray, last: bool, what: str
    ) -> np.ndarray | None:
        """Reject repeated values; after the last chunk, return the whole list sorted.

        Distinct IDs give distinct double-blinded values (except with negligible probability);
        a repeat could only come from a faulty or malicious peer and would break the common
        order. Each chunk is checked on arrival, the whole list with its last chunk.
        """
        if not last:
            if _ecdh.has_repeats(chunk):
                raise RemoteProtocolError(f"{what}: repeated points")
            return None
        whole = np.concatenate([np.frombuffer(filled, dtype="S32"), chunk])
        return _ecdh.sorted_distinct(whole, what)

    def _receive_own_keys(self, chunk_index: int, blob: bytes, what: str) -> bool:
        """Store one chunk of own double-blinded values; True after the last chunk."""
        count, last = self._expect_chunk(chunk_index, self.n_items, what)
        keys = _ecdh.check_points(blob, count, what)
        ordered = self._check_unique(keys, self._own_keys, last, what)
        # Validation done: commit.
        self._own_keys += blob
        self._own_sorted = ordered
        self._next_chunk += 1
        return last

    def _blind_peer_chunk(
        self, chunk_index: int, blob: bytes, what: str, keep: bool
    ) -> tuple[bytes, bool]:
        """Blind one chunk of the peer's points; and whether it is the last one.

        Commits nothing but :attr:`_peer_sorted` (after the last chunk, once all checks pass);
        the caller appends the returned values to :attr:`_peer_keys`.
        """
        assert self._peer_n_items is not None and self._scalar is not None
        count, last = self._expect_chunk(chunk_index, self._peer_n_items, what)
        _ecdh.check_points(blob, count, what)
        try:
            keys = self._engine.multiply(self._scalar, blob)
        except _ecdh.LowOrderPointError:
            raise RemoteProtocolError(f"{what}: a point of small order was rejected") from None
        ordered = self._check_unique(
            np.frombuffer(keys, dtype="S32"), self._peer_keys if keep else bytearray(), last, what
        )
        self._peer_sorted = ordered
        return keys, last

    def _pairwise_from_keys(self) -> np.ndarray:
        """Own rows whose double-blinded value the peer has too, sorted by that value."""
        assert self._order is not None
        assert self._peer_sorted is not None
        own = np.frombuffer(self._own_keys, dtype="S32")
        positions = np.flatnonzero(_ecdh.isin_points(own, self._peer_sorted, peer_sorted=True))
        by_value = np.argsort(own[positions], kind="stable")
        return self._rows[self._order[positions[by_value]]]

    def _count_matches(self) -> int:
        assert self._own_sorted is not None
        peer = np.frombuffer(self._peer_keys, dtype="S32")
        return int(_ecdh.isin_points(peer, self._own_sorted, peer_sorted=True).sum())

    def _drop_secrets(self) -> None:
        self._scalar = None  # no longer needed; drop our reference to the secret
        self._own_keys = bytearray()
        self._peer_keys = bytearray()
        self._own_sorted = self._peer_sorted = None
        self._order = None
        self._next_chunk = 0

    def _finish(self, rows: np.ndarray | None, cardinality: int | None) -> None:
        assert self._peer_n_items is not None
        self._drop_secrets()
        if rows is not None:
            rows.flags.writeable = False
            self._pairwise = rows
        if self._positions_follow:
            self._state = self._STATE_BEFORE_POSITIONS
            return
        self._result = PsiOutput(
            reveal=self._reveal,
            rows=rows,
            cardinality=cardinality,
            n_items=self.n_items,
            peer_n_items=self._peer_n_items,
        )
        self._state = PsiState.DONE

    def _finish_positions(self, positions: np.ndarray) -> None:
        assert self._pairwise is not None and self._peer_n_items is not None
        rows = self._pairwise[positions]
        rows.flags.writeable = False
        self._result = PsiOutput(
            reveal=self._reveal,
            rows=rows,
            cardinality=int(rows.size),
            n_items=self.n_items,
            peer_n_items=self._peer_n_items,
        )
        self._state = PsiState.DONE


class PsiInitiator(_PsiParty):
    """Party 1 of two-party ECDH-PSI over X25519 (the leader with more than two parties).

    Flow: :meth:`start` returns :class:`InitiatorHello`; on :class:`ResponderHello` it sends
    ``H(x)^a`` (:class:`InitiatorBlindedPoints`, shuffled); it stores the returned
    :class:`DoubleBlindedInitiatorPoints`; it blinds each chunk of
    :class:`ResponderBlindedPoints` and, with ``reveal="both"``, answers it with
    :class:`DoubleBlindedResponderPoints`; with ``reveal="cardinality"`` it ends by sending
    :class:`IntersectionCardinality`. With ``positions_follow`` it then waits for
    :meth:`send_positions`.

    Parameters
    ----------
    ids : sequence of str
        This party's IDs. Duplicates are treated as a set: the first row of each ID counts.
    chunk_points : int, default 65536
        Points per message (both directions).
    positions_follow : bool, default False
        End the session with an :class:`IntersectionPositions` message (more than two parties;
        only with ``reveal="both"``).
    reveal : {"both", "receiver", "cardinality"}, default "both"
        Who learns what; see :class:`PsiOutput`. The responder must be configured alike.
    hash_to_curve : {"sha256", "elligator2"}, default "sha256"
        The hash-to-curve map (see ``psi._ecdh``); the responder must use the same.
    engine : PsiEngine, optional
        Computes the hashes and multiplications (e.g. over a process pool). Default: an
        in-process engine. The role uses it but does not close it.

    Raises
    ------
    ParameterError
        If ``chunk_points``, ``reveal``, ``hash_to_curve`` or ``engine`` is invalid, if
        ``positions_follow`` is combined with a mode other than ``"both"``, or ``ids`` is a
        single string.
    DataError
        If an ID is not a ``str`` or not encodable as UTF-8.

    Security
    --------
    Semi-honest security under the DDH assumption on Curve25519 (and its twist with the
    ``"sha256"`` map), with the hash as a random oracle. Both parties learn each other's number
    of distinct IDs. With ``"both"`` both learn the intersection; with ``"receiver"`` only this
    party does; with ``"cardinality"`` both learn only its size (the responder learns the count
    this party reports: a malicious initiator could lie). No ID, hash of an ID or row order
    crosses: points go out under a fresh per-session scalar in a uniformly random order
    (:func:`psi._ecdh.permutation`, from :mod:`secrets`). The scalar is dropped after the last
    multiplication, and the role refuses to be pickled or copied. A malicious peer can make this
    party's result wrong (e.g. by reordering points), but malformed, non-canonical, repeated and
    small-order points are rejected.

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
        reveal: str = "both",
        hash_to_curve: str = "sha256",
        engine: PsiEngine | None = None,
    ) -> None:
        if isinstance(chunk_points, bool) or not isinstance(chunk_points, int):
            raise ParameterError("chunk_points must be an int")
        if not 1 <= chunk_points <= MAX_CHUNK_POINTS:
            raise ParameterError(
                f"chunk_points must be in [1, {MAX_CHUNK_POINTS}], got {chunk_points}"
            )
        if positions_follow and reveal != "both":
            raise ParameterError("positions_follow needs reveal='both'")
        super().__init__(ids, reveal=reveal, hash_to_curve=hash_to_curve, engine=engine)
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
            suite=self._suite,
            reveal=self._reveal,
            nonce=self._nonce,
            n_items=self.n_items,
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
        return self._on_responder_points(message)

    def _on_hello(self, envelope: Envelope, hello: ResponderHello) -> list[Envelope]:
        if hello.suite != self._suite:
            raise RemoteProtocolError(f"peer uses PSI suite {hello.suite!r}, not {self._suite!r}")
        _check_nonce(hello.nonce, "responder")
        _check_count(hello.n_items, "responder")
        if hello.nonce == self._nonce:
            raise RemoteProtocolError("responder echoed the initiator's nonce")
        session_id, salt = self._derive(self._nonce, hello.nonce)
        if envelope.session_id != session_id:
            raise RemoteProtocolError(
                "ResponderHello: frame belongs to another session (or other parameters)"
            )
        self._session_id, self._salt = session_id, salt
        self._peer_n_items = hello.n_items
        blob, self._order = self._own_blinded_blob()
        self._state = PsiState.WAIT_DOUBLE_BLINDED_INITIATOR_POINTS
        self._next_chunk = 0
        chunks = _chunks(blob, self._chunk_points)
        del blob
        messages = [InitiatorBlindedPoints(k, c) for k, c in enumerate(chunks)]
        return self._envelopes(messages, ROUND_INITIATOR_POINTS)

    def _on_responder_points(self, message: ResponderBlindedPoints) -> list[Envelope]:
        keys, last = self._blind_peer_chunk(
            message.chunk_index, message.points, "ResponderBlindedPoints", keep=True
        )
        self._peer_keys += keys
        self._next_chunk += 1
        out: list[Envelope] = []
        if self._reveal == "both":
            reply = DoubleBlindedResponderPoints(message.chunk_index, keys)
            out = self._envelopes([reply], ROUND_INITIATOR_REPLY)
        if last:
            if self._reveal == "cardinality":
                count = self._count_matches()
                out = self._envelopes([IntersectionCardinality(count)], ROUND_INITIATOR_REPLY)
                self._finish(None, count)
            else:
                rows = self._pairwise_from_keys()
                self._finish(rows, int(rows.size))
        return out

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
        self._finish_positions(np.asarray(values, dtype=np.int64))
        return self._envelopes([IntersectionPositions(blob)], ROUND_POSITIONS)


class PsiResponder(_PsiParty):
    """Party 2 of two-party ECDH-PSI over X25519 (every non-leader with more than two parties).

    Flow: on :class:`InitiatorHello` it answers :class:`ResponderHello`; it blinds each chunk of
    :class:`InitiatorBlindedPoints` and returns it as :class:`DoubleBlindedInitiatorPoints`
    (with ``reveal="cardinality"``: all of them, after the last chunk, in a fresh random order);
    after the last one it sends ``H(y)^b`` (:class:`ResponderBlindedPoints`, shuffled). Then,
    with ``"both"`` it stores the returned :class:`DoubleBlindedResponderPoints`, with
    ``"cardinality"`` it waits for :class:`IntersectionCardinality`, and with ``"receiver"`` it
    is done. If the initiator announced ``positions_follow`` it then waits for
    :class:`IntersectionPositions`.

    Parameters
    ----------
    ids : sequence of str
        This party's IDs. Duplicates are treated as a set: the first row of each ID counts.
    reveal : {"both", "receiver", "cardinality"}, default "both"
        The only mode this party accepts; a hello asking for another is rejected.
    hash_to_curve : {"sha256", "elligator2"}, default "sha256"
        The only hash-to-curve map (suite) this party accepts.
    engine : PsiEngine, optional
        Computes the hashes and multiplications. Default: an in-process engine.

    Raises
    ------
    ParameterError
        If ``reveal``, ``hash_to_curve`` or ``engine`` is invalid or ``ids`` is a single string.
    DataError
        If an ID is not a ``str`` or not encodable as UTF-8.

    Security
    --------
    As :class:`PsiInitiator`, with the roles swapped. Because the responder fixes ``reveal``,
    an initiator cannot talk it into revealing more than it agreed to. With ``"receiver"`` this
    party learns only the initiator's set size. With more than two parties this role also
    learns its pairwise intersection with the leader before the final positions arrive.
    """

    _EXPECTED: ClassVar[dict[PsiState, tuple[type[Message], int]]] = {
        PsiState.WAIT_INITIATOR_HELLO: (InitiatorHello, ROUND_HELLO),
        PsiState.WAIT_INITIATOR_POINTS: (InitiatorBlindedPoints, ROUND_INITIATOR_POINTS),
        PsiState.WAIT_DOUBLE_BLINDED_RESPONDER_POINTS: (
            DoubleBlindedResponderPoints,
            ROUND_INITIATOR_REPLY,
        ),
        PsiState.WAIT_CARDINALITY: (IntersectionCardinality, ROUND_INITIATOR_REPLY),
        PsiState.WAIT_POSITIONS: (IntersectionPositions, ROUND_POSITIONS),
    }
    _STATE_BEFORE_POSITIONS: ClassVar[PsiState] = PsiState.WAIT_POSITIONS

    def __init__(
        self,
        ids: Sequence[str],
        *,
        reveal: str = "both",
        hash_to_curve: str = "sha256",
        engine: PsiEngine | None = None,
    ) -> None:
        super().__init__(ids, reveal=reveal, hash_to_curve=hash_to_curve, engine=engine)
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
                rows = self._pairwise_from_keys()
                self._finish(rows, int(rows.size))
            return []
        if isinstance(message, IntersectionCardinality):
            return self._on_cardinality(message)
        assert isinstance(message, IntersectionPositions)
        return self._on_positions(message)

    def _on_hello(self, envelope: Envelope, hello: InitiatorHello) -> list[Envelope]:
        if hello.suite != self._suite:
            raise RemoteProtocolError(f"peer uses PSI suite {hello.suite!r}, not {self._suite!r}")
        if hello.reveal != self._reveal:
            raise RemoteProtocolError(
                f"peer asks for reveal={hello.reveal!r}; this party accepts only "
                f"reveal={self._reveal!r}"
            )
        _check_nonce(hello.nonce, "initiator")
        _check_count(hello.n_items, "initiator")
        if not 1 <= hello.chunk_points <= MAX_CHUNK_POINTS:
            raise RemoteProtocolError(
                f"chunk_points {hello.chunk_points} outside [1, {MAX_CHUNK_POINTS}]"
            )
        if hello.positions_follow and hello.reveal != "both":
            raise RemoteProtocolError("positions_follow needs reveal='both'")
        if envelope.session_id != hello.nonce:
            raise RemoteProtocolError("InitiatorHello: provisional session id is not its nonce")
        if hello.nonce == self._nonce:  # pragma: no cover - a 2^-128 coincidence or a replay
            raise RemoteProtocolError("initiator used the responder's nonce")
        self._chunk_points = hello.chunk_points
        self._positions_follow = hello.positions_follow
        self._session_id, self._salt = self._derive(hello.nonce, self._nonce)
        self._peer_n_items = hello.n_items
        self._state = PsiState.WAIT_INITIATOR_POINTS
        self._next_chunk = 0
        reply = ResponderHello(suite=self._suite, nonce=self._nonce, n_items=self.n_items)
        return self._envelopes([reply], ROUND_HELLO)

    def _on_initiator_points(self, message: InitiatorBlindedPoints) -> list[Envelope]:
        # With "receiver" we never need the initiator's double-blinded values again.
        keep = self._reveal != "receiver"
        keys, last = self._blind_peer_chunk(
            message.chunk_index, message.points, "InitiatorBlindedPoints", keep=keep
        )
        messages: list[Message] = []
        if self._reveal != "cardinality":
            messages.append(DoubleBlindedInitiatorPoints(message.chunk_index, keys))
        if keep:
            self._peer_keys += keys
        self._next_chunk += 1
        if not last:
            return self._envelopes(messages, ROUND_RESPONDER_REPLY)
        if self._reveal == "cardinality":
            # A fresh secret order over the whole list: the initiator learns how many of its
            # values match, not which.
            peer = np.frombuffer(self._peer_keys, dtype="S32")
            shuffled = peer[_ecdh.permutation(peer.size)].tobytes()
            del peer
            messages += [
                DoubleBlindedInitiatorPoints(k, c)
                for k, c in enumerate(_chunks(shuffled, self._chunk_points))
            ]
            self._peer_keys = bytearray()
        own, self._order = self._own_blinded_blob()
        messages += [
            ResponderBlindedPoints(k, c) for k, c in enumerate(_chunks(own, self._chunk_points))
        ]
        self._scalar = None  # all our multiplications are done
        self._next_chunk = 0
        if self._reveal == "both":
            self._state = PsiState.WAIT_DOUBLE_BLINDED_RESPONDER_POINTS
        elif self._reveal == "cardinality":
            self._state = PsiState.WAIT_CARDINALITY
        else:
            self._finish(None, None)
        return self._envelopes(messages, ROUND_RESPONDER_REPLY)

    def _on_cardinality(self, message: IntersectionCardinality) -> list[Envelope]:
        assert self._peer_n_items is not None
        bound = min(self.n_items, self._peer_n_items)
        if not 0 <= message.count <= bound:
            raise RemoteProtocolError(
                f"IntersectionCardinality: count {message.count} outside [0, {bound}]"
            )
        self._finish(None, int(message.count))
        return []

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
        self._finish_positions(values.astype(np.int64))
        return []
