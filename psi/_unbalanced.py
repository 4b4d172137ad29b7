"""Unbalanced PSI: a small client set against a large server set, with a precomputed server side.

Protocol (OPRF-PSI with the 2HashDH OPRF over Ed25519's prime-order group)
--------------------------------------------------------------------------
The OPRF is ``F_k(x) = Hash2(x, k * H(x))`` (Jarecki, Kiayias and Krawczyk, ASIACRYPT 2014;
details and file formats in ``psi._unbalanced_oprf``).

Offline, once per server key: the server draws a long-term key ``k`` and a public salt
(:class:`OprfKey`, stored on its own, mode 0600) and computes the sorted 16-byte tags
``T = {F_k(y)}`` of its distinct IDs (:meth:`ServerTagTable.precompute`, in parallel; about
130 µs of CPU per ID). The table is cached on disk and reused for every client.

Online, per client session (:class:`UnbalancedClient`, :class:`UnbalancedServer`):

0. Hellos: the client sends a nonce, its number of distinct IDs, its chunk size and the
   ``(key id, digest)`` of the tag set it has cached, if any; the server answers with its nonce,
   key id, salt, number of tags and tag-set digest. The session id is a hash of both nonces.
1. Only if the client has no matching cached copy: the server sends ``T`` (the one-time
   download, ``16 * |Y|`` bytes; the client verifies the digest and may cache the set).
2. For each own ID the client draws a fresh scalar ``r`` and sends ``r * H(x)``.
3. The server checks every point (canonical, on the curve, prime order) and returns
   ``k * (r * H(x))`` in the same order.
4. The client unblinds with ``r^-1``, computes ``F_k(x)`` and keeps its IDs whose tag is in ``T``.
   Optionally (``reveal_to_server``) it sends the matched tags back so that the server learns
   the intersection as its own rows; both sides then list the intersection by ascending tag.

Online cost grows with the client's set only: ``64 * |X|`` bytes of points plus a fixed few
hundred bytes of hellos; the client does one hash to the group, two scalar multiplications and
one point validation per ID (about 0.3 ms), the server one validated scalar multiplication per
client ID (about 0.15 ms).

Security
--------
Semi-honest model; the one-more-gap-Diffie-Hellman assumption in Ed25519's prime-order group
(the 2HashDH security proof), SHA-512 and SHA-256 as random oracles.

- The server learns the number of distinct client IDs, and nothing about them: each
  ``r * H(x)`` is a uniformly random group element for a uniform ``r``. With
  ``reveal_to_server`` it also learns the intersection (as its rows).
- The client learns the intersection and the number of distinct server IDs (the size of
  ``T``); the tags of IDs it did not query are pseudorandom to it.
- A fresh ``r`` per ID (rather than one per session) makes each query information-theoretically
  hiding, even jointly: one ``r`` for all IDs would let the server relate queries (e.g. test
  whether a pair of guesses matches a pair of queries), which is only DDH-hard. The inverses
  cost one scalar inversion per session (batched), so there is no speed reason to share ``r``.
- Inherent to OPRF-PSI: a client can query any IDs it likes and test them against ``T``, so a
  server facing untrusted clients must limit how many IDs each may query
  (``max_client_items`` per session; across sessions that is the operator's job) and rotate
  the key now and then. A client that once learned ``F_k(x)`` can test ``x`` against every
  later tag set under the same key without asking: rotate the key when the set changes.
- The secret key ``k`` never leaves the server: it is not in the table or tag-set files, nor in
  any message, and the roles and the key refuse to be pickled or copied.
- Every point from a peer is validated (``psi._ed25519.validate_points``); anything malformed,
  out of order or from another session raises :class:`RemoteProtocolError` and leaves the role
  unchanged. A malicious server can still make the client's result wrong (bad evaluations or
  tags), and a malicious client can lie in ``MatchedTags``: there is no protection against that.
"""

from __future__ import annotations

import enum
import os
import secrets
from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple, NoReturn

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
from psi import _unbalanced_oprf as oprf
from psi._unbalanced_messages import (
    ROUND_EVALUATED,
    ROUND_HELLO,
    ROUND_MATCHED,
    ROUND_QUERIES,
    ROUND_TAGS,
    UNBALANCED_REGISTRY,
    BlindedQueries,
    EvaluatedQueries,
    MatchedTags,
    ServerTags,
    UnbalancedClientHello,
    UnbalancedServerHello,
)
from psi._unbalanced_oprf import OprfKey, ServerTagTable, TagSet

__all__ = [
    "DEFAULT_QUERY_CHUNK",
    "DEFAULT_TAG_CHUNK",
    "UnbalancedClient",
    "UnbalancedPsiResult",
    "UnbalancedServer",
    "UnbalancedState",
    "run_unbalanced",
]

DEFAULT_QUERY_CHUNK = 1 << 16
"""Points per query or evaluation message by default (2 MiB)."""
DEFAULT_TAG_CHUNK = 1 << 17
"""Tags per :class:`ServerTags` message by default (2 MiB)."""
MAX_QUERY_CHUNK = 1 << 22
MAX_TAG_CHUNK = 1 << 23
_NONCE_BYTES = oprf.NONCE_BYTES


class UnbalancedState(enum.Enum):
    """States of :class:`UnbalancedClient` and :class:`UnbalancedServer`."""

    IDLE = "idle"
    """Client before :meth:`UnbalancedClient.start`."""
    WAIT_CLIENT_HELLO = "wait-client-hello"
    WAIT_SERVER_HELLO = "wait-server-hello"
    WAIT_SERVER_TAGS = "wait-server-tags"
    WAIT_QUERIES = "wait-queries"
    WAIT_EVALUATIONS = "wait-evaluations"
    WAIT_MATCHED_TAGS = "wait-matched-tags"
    DONE = "done"


def _n_chunks(n_items: int, chunk: int) -> int:
    return max(1, -(-n_items // chunk))


def _chunk_size(n_items: int, chunk: int, index: int) -> int:
    return max(0, min(chunk, n_items - index * chunk))


def _split(blob: bytes, item_bytes: int, chunk: int) -> list[bytes]:
    n_items = len(blob) // item_bytes
    step = item_bytes * chunk
    return [blob[k * step : (k + 1) * step] for k in range(_n_chunks(n_items, chunk))]


def _check_int(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ParameterError(f"{name} must be an int in [{low}, {high}], got {value!r}")
    return value


class _Party:
    """Shared bookkeeping of both roles: state, session, expected messages."""

    _EXPECTED: ClassVar[dict[UnbalancedState, tuple[type[Message], int]]]
    _HELLO: ClassVar[type[Message]]

    def __init__(self) -> None:
        self._state = UnbalancedState.IDLE
        self._nonce = secrets.token_bytes(_NONCE_BYTES)
        self._session_id: bytes | None = None
        self._next_chunk = 0

    @property
    def state(self) -> UnbalancedState:
        """Current :class:`UnbalancedState`."""
        return self._state

    @property
    def session_id(self) -> bytes | None:
        """The 16-byte session id once both nonces are known (``None`` before)."""
        return self._session_id

    def __getstate__(self) -> NoReturn:
        raise TypeError(f"{type(self).__name__} holds secret scalars and cannot be pickled")

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        raise TypeError(f"{type(self).__name__} holds secret scalars and cannot be copied")

    def _expect(self, envelope: Envelope) -> Message:
        if self._state is UnbalancedState.IDLE:
            raise LocalProtocolError("call start() before receiving messages")
        got = type(envelope.message).__name__
        expected = self._EXPECTED.get(self._state)
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
        # Hellos are checked against the nonces they carry (the session id derives from them).
        if cls is not self._HELLO and envelope.session_id != self._session_id:
            raise RemoteProtocolError(f"{got}: frame belongs to another session")
        return envelope.message

    def _expect_chunk(self, index: int, what: str) -> None:
        if index != self._next_chunk:
            raise RemoteProtocolError(
                f"{what}: expected chunk {self._next_chunk}, got chunk {index}"
            )

    def _envelopes(self, messages: Sequence[Message], round_index: int) -> list[Envelope]:
        assert self._session_id is not None
        return [Envelope(self._session_id, round_index, m) for m in messages]


class UnbalancedClient(_Party):
    """The client of unbalanced PSI: few IDs, learns the intersection.

    Flow: :meth:`start` returns :class:`UnbalancedClientHello`; on
    :class:`UnbalancedServerHello` it either waits for the :class:`ServerTags` download or,
    with a matching cached :class:`TagSet`, sends its :class:`BlindedQueries` at once; each
    chunk of :class:`EvaluatedQueries` is unblinded; after the last one the result is known
    (and, with ``reveal_to_server``, :class:`MatchedTags` goes out).

    Parameters
    ----------
    ids : sequence of str
        The client's IDs. Duplicates are treated as a set: the first row of each ID counts.
    tag_set : TagSet, optional
        A tag set cached from an earlier session (:attr:`tag_set`, :meth:`TagSet.load`). If the
        server still uses that key and set, the download is skipped.
    chunk_points : int, default 65536
        Points per query and evaluation message.
    reveal_to_server : bool, default False
        Send the matched tags so that the server also learns the intersection (its rows).

    Raises
    ------
    ParameterError
        If ``chunk_points`` is out of range, ``ids`` is a single string, or ``tag_set`` is not
        a :class:`TagSet`.
    DataError
        If an ID is not a ``str`` or not encodable as UTF-8.

    Security
    --------
    The server sees ``r * H(x)`` for a fresh uniform scalar ``r`` per ID (drawn with
    :mod:`secrets`): uniformly random group elements, independent of the IDs, so no order
    shuffling is needed. It learns the number of distinct IDs, and the intersection only with
    ``reveal_to_server``. Scalars are dropped after unblinding; the role refuses to be pickled
    or copied. Points from the server are validated; a malicious server can still make the
    result wrong.

    Examples
    --------
    >>> from psi._unbalanced import UnbalancedClient, UnbalancedServer
    >>> from psi._unbalanced_oprf import OprfKey, ServerTagTable
    >>> key = OprfKey.generate()
    >>> server = UnbalancedServer(ServerTagTable.precompute(["b", "c"], key, n_jobs=1), key)
    >>> client = UnbalancedClient(["a", "b"])
    >>> out = client.start()
    >>> while out:
    ...     back = [e for env in out for e in server.receive(env)]
    ...     out = [e for env in back for e in client.receive(env)]
    >>> client.intersection_rows
    [1]
    """

    _EXPECTED: ClassVar[dict[UnbalancedState, tuple[type[Message], int]]] = {
        UnbalancedState.WAIT_SERVER_HELLO: (UnbalancedServerHello, ROUND_HELLO),
        UnbalancedState.WAIT_SERVER_TAGS: (ServerTags, ROUND_TAGS),
        UnbalancedState.WAIT_EVALUATIONS: (EvaluatedQueries, ROUND_EVALUATED),
    }
    _HELLO: ClassVar[type[Message]] = UnbalancedServerHello

    def __init__(
        self,
        ids: Sequence[str],
        *,
        tag_set: TagSet | None = None,
        chunk_points: int = DEFAULT_QUERY_CHUNK,
        reveal_to_server: bool = False,
    ) -> None:
        self._chunk_points = _check_int(chunk_points, "chunk_points", 1, MAX_QUERY_CHUNK)
        if tag_set is not None and not isinstance(tag_set, TagSet):
            raise ParameterError(f"tag_set must be a TagSet, got {type(tag_set).__name__}")
        self._ids, self._rows = oprf.dedupe(ids)
        if len(self._ids) > oprf.MAX_ITEMS:
            raise ParameterError(f"at most {oprf.MAX_ITEMS} distinct IDs are supported")
        self._encoded = oprf.encode_ids(self._ids)
        super().__init__()
        self._cached = tag_set
        self._reveal = bool(reveal_to_server)
        self._hello: UnbalancedServerHello | None = None
        self._tag_set: TagSet | None = None
        self._tag_chunks: list[bytes] = []
        self._inverses: list[bytes] = []
        self._own_tags: list[bytes] = []
        self._result: list[int] | None = None

    # -- public read-only state -----------------------------------------------------------
    @property
    def n_items(self) -> int:
        """Number of distinct own IDs."""
        return len(self._ids)

    @property
    def server_n_items(self) -> int | None:
        """Number of distinct server IDs (tags) announced (``None`` before the server hello)."""
        return None if self._hello is None else self._hello.n_tags

    @property
    def tag_set(self) -> TagSet | None:
        """The server's tag set used in this session (cached or downloaded): cache it.

        ``None`` until it is complete.
        """
        return self._tag_set

    @property
    def intersection_rows(self) -> list[int]:
        """Own row indices of the intersection, by ascending tag (the server's order too).

        Raises
        ------
        LocalProtocolError
            If the protocol has not reached ``DONE``.
        """
        if self._result is None:
            raise LocalProtocolError(f"result not available in state {self._state.name}")
        return list(self._result)

    # -- protocol ---------------------------------------------------------------------------
    def start(self) -> list[Envelope]:
        """Begin the session: returns the :class:`UnbalancedClientHello` envelope.

        Raises
        ------
        LocalProtocolError
            If already started.
        """
        if self._state is not UnbalancedState.IDLE:
            raise LocalProtocolError(f"start() called in state {self._state.name}")
        cached = self._cached
        hello = UnbalancedClientHello(
            suite=oprf.SUITE,
            nonce=self._nonce,
            n_items=len(self._ids),
            chunk_points=self._chunk_points,
            cached_key_id=b"" if cached is None else cached.key_id,
            cached_digest=b"" if cached is None else cached.digest,
            reveal_to_server=self._reveal,
        )
        self._state = UnbalancedState.WAIT_SERVER_HELLO
        # Provisional session id: our nonce. Every later frame uses the derived id.
        return [Envelope(self._nonce, ROUND_HELLO, hello)]

    def receive(self, envelope: Envelope) -> list[Envelope]:
        """Process one decoded envelope from the server; returns envelopes to send.

        Raises
        ------
        RemoteProtocolError
            If the message does not fit the current state or is malformed; the state is
            unchanged.
        LocalProtocolError
            If called before :meth:`start`.
        """
        message = self._expect(envelope)
        if isinstance(message, UnbalancedServerHello):
            return self._on_hello(envelope, message)
        if isinstance(message, ServerTags):
            return self._on_tags(message)
        assert isinstance(message, EvaluatedQueries)
        return self._on_evaluations(message)

    def _on_hello(self, envelope: Envelope, hello: UnbalancedServerHello) -> list[Envelope]:
        if hello.suite != oprf.SUITE:
            raise RemoteProtocolError(f"server uses suite {hello.suite!r}, expected {oprf.SUITE!r}")
        sizes = (
            ("nonce", hello.nonce, _NONCE_BYTES),
            ("key id", hello.key_id, oprf.KEY_ID_BYTES),
            ("salt", hello.salt, oprf.SALT_BYTES),
            ("tags digest", hello.tags_digest, oprf.DIGEST_BYTES),
        )
        for name, value, size in sizes:
            if len(value) != size:
                raise RemoteProtocolError(f"server {name} must be {size} bytes, got {len(value)}")
        if not 0 <= hello.n_tags <= oprf.MAX_ITEMS:
            raise RemoteProtocolError(f"server announced {hello.n_tags} tags")
        if not 1 <= hello.chunk_tags <= MAX_TAG_CHUNK:
            raise RemoteProtocolError(f"chunk_tags {hello.chunk_tags} outside [1, {MAX_TAG_CHUNK}]")
        if hello.nonce == self._nonce:
            raise RemoteProtocolError("server echoed the client's nonce")
        session_id = oprf.derive_session_id(self._nonce, hello.nonce)
        if envelope.session_id != session_id:
            raise RemoteProtocolError("UnbalancedServerHello: frame belongs to another session")
        cached = self._cached
        if not hello.tags_follow and not (
            cached is not None
            and cached.key_id == hello.key_id
            and cached.salt == hello.salt
            and cached.digest == hello.tags_digest
            and len(cached) == hello.n_tags
        ):
            raise RemoteProtocolError("server sent no tags but the client has no matching copy")
        # Validation done: commit.
        self._session_id = session_id
        self._hello = hello
        if hello.tags_follow:
            self._state = UnbalancedState.WAIT_SERVER_TAGS
            self._next_chunk = 0
            self._tag_chunks = []
            return []
        self._tag_set = cached
        return self._queries()

    def _on_tags(self, message: ServerTags) -> list[Envelope]:
        hello = self._hello
        assert hello is not None
        what = "ServerTags"
        self._expect_chunk(message.chunk_index, what)
        count = _chunk_size(hello.n_tags, hello.chunk_tags, message.chunk_index)
        if len(message.tags) != count * oprf.TAG_BYTES:
            raise RemoteProtocolError(
                f"{what}: expected {count} tags ({count * oprf.TAG_BYTES} bytes), "
                f"got {len(message.tags)} bytes"
            )
        tags = oprf.tags_array(message.tags)
        if not oprf.strictly_ascending(tags) or (
            count and self._tag_chunks and tags[0] <= oprf.tags_array(self._tag_chunks[-1])[-1]
        ):
            raise RemoteProtocolError(f"{what}: tags are not strictly ascending")
        last = message.chunk_index + 1 == _n_chunks(hello.n_tags, hello.chunk_tags)
        tag_set = None
        if last:
            blob = b"".join([*self._tag_chunks, message.tags])
            try:
                tag_set = TagSet(hello.key_id, hello.salt, oprf.tags_array(blob))
            except DataError:  # pragma: no cover - the per-chunk checks above cover this
                raise RemoteProtocolError(f"{what}: invalid tag set") from None
            if tag_set.digest != hello.tags_digest:
                raise RemoteProtocolError(f"{what}: the tag set does not match its digest")
        # Validation done: commit.
        self._tag_chunks.append(message.tags)
        self._next_chunk += 1
        if tag_set is None:
            return []
        self._tag_set = tag_set
        self._tag_chunks = []
        return self._queries()

    def _queries(self) -> list[Envelope]:
        """Hash and blind every own ID with its own fresh scalar; the query chunks."""
        assert self._hello is not None
        scalars = [ed.new_scalar() for _ in self._encoded]
        hashed = ed.hash_to_group(self._encoded, self._hello.salt)
        blinded = oprf.blind(hashed, scalars)
        self._inverses = oprf.batch_invert(scalars)
        del scalars
        self._own_tags = []
        self._next_chunk = 0
        self._state = UnbalancedState.WAIT_EVALUATIONS
        chunks = _split(blinded, ed.POINT_BYTES, self._chunk_points)
        return self._envelopes([BlindedQueries(k, c) for k, c in enumerate(chunks)], ROUND_QUERIES)

    def _on_evaluations(self, message: EvaluatedQueries) -> list[Envelope]:
        assert self._hello is not None and self._tag_set is not None
        what = "EvaluatedQueries"
        self._expect_chunk(message.chunk_index, what)
        n, step = len(self._ids), self._chunk_points
        count = _chunk_size(n, step, message.chunk_index)
        ed.validate_points(message.points, count, what)
        start = message.chunk_index * step
        unblinded = oprf.unblind(message.points, self._inverses[start : start + count])
        tags = oprf.finalize(self._encoded[start : start + count], unblinded, self._hello.salt)
        # Validation done: commit.
        self._own_tags.append(tags)
        self._next_chunk += 1
        if self._next_chunk < _n_chunks(n, step):
            return []
        return self._finish()

    def _finish(self) -> list[Envelope]:
        assert self._tag_set is not None
        self._inverses = []
        own = oprf.tags_array(b"".join(self._own_tags))
        self._own_tags = []
        where, found = self._tag_set.positions(own)
        hits = np.flatnonzero(found)
        hits = hits[np.argsort(where[hits], kind="stable")]
        self._result = [self._rows[int(i)] for i in hits]
        self._state = UnbalancedState.DONE
        if not self._reveal:
            return []
        return self._envelopes([MatchedTags(own[hits].tobytes())], ROUND_MATCHED)


class UnbalancedServer(_Party):
    """The server of unbalanced PSI: a large precomputed set, answers OPRF queries.

    One object per client session; the :class:`OprfKey` and :class:`ServerTagTable` are
    shared by all of them. Flow: on :class:`UnbalancedClientHello` it answers
    :class:`UnbalancedServerHello` and, unless the client's cached copy matches, the
    :class:`ServerTags` download; each chunk of :class:`BlindedQueries` is answered with
    :class:`EvaluatedQueries`; if the client announced ``reveal_to_server`` it then waits for
    :class:`MatchedTags`.

    Parameters
    ----------
    table : ServerTagTable
        The precomputed tags and rows.
    key : OprfKey
        The key the table was computed with.
    chunk_tags : int, default 131072
        Tags per :class:`ServerTags` message.
    max_client_items : int, optional
        Refuse sessions whose client announces more IDs than this (a per-session rate limit).

    Raises
    ------
    ParameterError
        If the key is not the table's key (key ids differ) or a parameter is out of range.

    Security
    --------
    Every blinded point is validated before ``k`` touches it (canonical, on the curve, in the
    prime-order subgroup), so a client cannot learn ``k`` modulo the cofactor; then the reply
    is ``k * P``, which reveals nothing beyond the OPRF value the client is entitled to. The
    server learns the number of distinct client IDs and, only with ``reveal_to_server``, the
    intersection. Without limits a client can query any IDs it likes (inherent to OPRF-PSI):
    set ``max_client_items``, count queries across sessions, rotate the key.
    """

    _EXPECTED: ClassVar[dict[UnbalancedState, tuple[type[Message], int]]] = {
        UnbalancedState.WAIT_CLIENT_HELLO: (UnbalancedClientHello, ROUND_HELLO),
        UnbalancedState.WAIT_QUERIES: (BlindedQueries, ROUND_QUERIES),
        UnbalancedState.WAIT_MATCHED_TAGS: (MatchedTags, ROUND_MATCHED),
    }
    _HELLO: ClassVar[type[Message]] = UnbalancedClientHello

    def __init__(
        self,
        table: ServerTagTable,
        key: OprfKey,
        *,
        chunk_tags: int = DEFAULT_TAG_CHUNK,
        max_client_items: int | None = None,
    ) -> None:
        if not isinstance(table, ServerTagTable):
            raise ParameterError(f"table must be a ServerTagTable, got {type(table).__name__}")
        if not isinstance(key, OprfKey):
            raise ParameterError(f"key must be an OprfKey, got {type(key).__name__}")
        if key.key_id != table.key_id:
            raise ParameterError("the table was computed with another key (key ids differ)")
        self._chunk_tags = _check_int(chunk_tags, "chunk_tags", 1, MAX_TAG_CHUNK)
        self._max_client_items = (
            oprf.MAX_ITEMS
            if max_client_items is None
            else _check_int(max_client_items, "max_client_items", 0, oprf.MAX_ITEMS)
        )
        super().__init__()
        self._table = table
        self._key: OprfKey | None = key
        self._client_hello: UnbalancedClientHello | None = None
        self._result: list[int] | None = None
        self._state = UnbalancedState.WAIT_CLIENT_HELLO

    @property
    def client_n_items(self) -> int | None:
        """Number of distinct client IDs announced (``None`` before the client hello)."""
        return None if self._client_hello is None else self._client_hello.n_items

    @property
    def intersection_rows(self) -> list[int]:
        """Own row indices of the intersection, by ascending tag (the client's order too).

        Raises
        ------
        LocalProtocolError
            If the protocol has not reached ``DONE`` or the client did not reveal the result.
        """
        if self._result is None:
            raise LocalProtocolError(
                f"result not available in state {self._state.name} "
                "(only with the client's reveal_to_server)"
            )
        return list(self._result)

    def receive(self, envelope: Envelope) -> list[Envelope]:
        """Process one decoded envelope from the client; returns envelopes to send.

        Raises
        ------
        RemoteProtocolError
            If the message does not fit the current state or is malformed; the state is
            unchanged.
        """
        message = self._expect(envelope)
        if isinstance(message, UnbalancedClientHello):
            return self._on_hello(envelope, message)
        if isinstance(message, BlindedQueries):
            return self._on_queries(message)
        assert isinstance(message, MatchedTags)
        return self._on_matched(message)

    def _on_hello(self, envelope: Envelope, hello: UnbalancedClientHello) -> list[Envelope]:
        if hello.suite != oprf.SUITE:
            raise RemoteProtocolError(f"client uses suite {hello.suite!r}, expected {oprf.SUITE!r}")
        if len(hello.nonce) != _NONCE_BYTES:
            raise RemoteProtocolError(
                f"client nonce must be {_NONCE_BYTES} bytes, got {len(hello.nonce)}"
            )
        if envelope.session_id != hello.nonce:
            raise RemoteProtocolError(
                "UnbalancedClientHello: provisional session id is not its nonce"
            )
        if not 0 <= hello.n_items <= self._max_client_items:
            raise RemoteProtocolError(
                f"client announced {hello.n_items} items, outside [0, {self._max_client_items}]"
            )
        if not 1 <= hello.chunk_points <= MAX_QUERY_CHUNK:
            raise RemoteProtocolError(
                f"chunk_points {hello.chunk_points} outside [1, {MAX_QUERY_CHUNK}]"
            )
        if (len(hello.cached_key_id), len(hello.cached_digest)) not in (
            (0, 0),
            (oprf.KEY_ID_BYTES, oprf.DIGEST_BYTES),
        ):
            raise RemoteProtocolError(
                f"cached key id and digest must both be empty or {oprf.KEY_ID_BYTES} and "
                f"{oprf.DIGEST_BYTES} bytes"
            )
        if hello.nonce == self._nonce:  # pragma: no cover - a 2^-128 coincidence or a replay
            raise RemoteProtocolError("client used the server's nonce")
        tag_set = self._table.tag_set
        tags_follow = (hello.cached_key_id, hello.cached_digest) != (
            tag_set.key_id,
            tag_set.digest,
        )
        # Validation done: commit.
        self._session_id = oprf.derive_session_id(hello.nonce, self._nonce)
        self._client_hello = hello
        self._state = UnbalancedState.WAIT_QUERIES
        self._next_chunk = 0
        reply = UnbalancedServerHello(
            suite=oprf.SUITE,
            nonce=self._nonce,
            key_id=tag_set.key_id,
            salt=tag_set.salt,
            n_tags=len(tag_set),
            tags_digest=tag_set.digest,
            chunk_tags=self._chunk_tags,
            tags_follow=tags_follow,
        )
        out = self._envelopes([reply], ROUND_HELLO)
        if tags_follow:
            chunks = _split(tag_set.tags.tobytes(), oprf.TAG_BYTES, self._chunk_tags)
            out += self._envelopes([ServerTags(k, c) for k, c in enumerate(chunks)], ROUND_TAGS)
        return out

    def _on_queries(self, message: BlindedQueries) -> list[Envelope]:
        hello, key = self._client_hello, self._key
        assert hello is not None and key is not None
        what = "BlindedQueries"
        self._expect_chunk(message.chunk_index, what)
        count = _chunk_size(hello.n_items, hello.chunk_points, message.chunk_index)
        evaluated = key.evaluate(message.points, count, what)
        # Validation done: commit.
        self._next_chunk += 1
        if self._next_chunk == _n_chunks(hello.n_items, hello.chunk_points):
            self._key = None  # all our multiplications are done
            self._next_chunk = 0
            self._state = (
                UnbalancedState.WAIT_MATCHED_TAGS
                if hello.reveal_to_server
                else UnbalancedState.DONE
            )
        reply = EvaluatedQueries(message.chunk_index, evaluated)
        return self._envelopes([reply], ROUND_EVALUATED)

    def _on_matched(self, message: MatchedTags) -> list[Envelope]:
        assert self._client_hello is not None
        what = "MatchedTags"
        if len(message.tags) % oprf.TAG_BYTES:
            raise RemoteProtocolError(
                f"{what}: {len(message.tags)} bytes is not a whole number of tags"
            )
        tags = oprf.tags_array(message.tags)
        limit = min(self._client_hello.n_items, len(self._table))
        if tags.size > limit:
            raise RemoteProtocolError(f"{what}: {tags.size} tags, at most {limit} possible")
        if not oprf.strictly_ascending(tags):
            raise RemoteProtocolError(f"{what}: tags are not strictly ascending")
        where, found = self._table.tag_set.positions(tags)
        if not bool(np.all(found)):
            raise RemoteProtocolError(f"{what}: a tag is not in the server's tag set")
        # Validation done: commit.
        self._result = [int(r) for r in self._table.rows[where]]
        self._state = UnbalancedState.DONE
        return []


# -- in-process driver -------------------------------------------------------------------------
class UnbalancedPsiResult(NamedTuple):
    """Result of :func:`run_unbalanced`.

    Attributes
    ----------
    client_rows : list of int
        The client's row indices (into ``client_ids``) of the intersection, by ascending tag.
    server_rows : list of int or None
        The server's rows of the intersection in the same order (``reveal_to_server``), else
        ``None``.
    tag_set : TagSet
        The server's tag set as the client holds it: pass it as ``client_tag_set`` next time
        (or :meth:`TagSet.save` it) to skip the download.
    transport : InMemoryTransport
        The transport, with the transcript of every frame.
    """

    client_rows: list[int]
    server_rows: list[int] | None
    tag_set: TagSet
    transport: InMemoryTransport


def _send(transport: InMemoryTransport, sender: str, receiver: str, out: list[Envelope]) -> None:
    for env in out:
        frame = UNBALANCED_REGISTRY.encode(
            env.message, session_id=env.session_id, round_index=env.round_index
        )
        transport.send(
            sender,
            receiver,
            frame,
            message_type=type(env.message).__name__,
            round_index=env.round_index,
        )


def run_unbalanced(
    client_ids: Sequence[str],
    server: ServerTagTable | str | os.PathLike[str],
    key: OprfKey | str | os.PathLike[str],
    *,
    client_tag_set: TagSet | str | os.PathLike[str] | None = None,
    reveal_to_server: bool = False,
    chunk_points: int = DEFAULT_QUERY_CHUNK,
    chunk_tags: int = DEFAULT_TAG_CHUNK,
    names: tuple[str, str] = ("client", "server"),
    keep_payloads: bool = False,
) -> UnbalancedPsiResult:
    """Run unbalanced PSI in process against a precomputed server table.

    Every envelope is encoded with the ``psi-u`` registry, sent through an
    :class:`~protocols.transport.InMemoryTransport` (which keeps a transcript) and decoded on
    the other side, exactly as a networked runner would.

    Parameters
    ----------
    client_ids : sequence of str
        The client's IDs; duplicates count once (first row).
    server : ServerTagTable or path
        The server's precomputed table, or the path of a table file
        (:meth:`ServerTagTable.save`).
    key : OprfKey or path
        The server's OPRF key, or the path of its key file (:meth:`OprfKey.save`).
    client_tag_set : TagSet or path, optional
        The client's cached copy of the server's tag set (skips the download if current).
    reveal_to_server : bool, default False
        The client sends the matched tags so that the server also learns its rows.
    chunk_points, chunk_tags : int
        Points per query message, tags per download message.
    names : tuple of two str, default ("client", "server")
        Party names in the transcript.
    keep_payloads : bool, default False
        Keep each frame's bytes in the transcript (audits, tests).

    Returns
    -------
    UnbalancedPsiResult
        ``(client_rows, server_rows, tag_set, transport)``.

    Raises
    ------
    ParameterError
        If the names are not two distinct strings, a parameter is out of range, a file is
        missing, or the key is not the table's key.
    DataError
        If an ID is not a ``str``, or a file is corrupted, truncated or of another version.
    InsecureParametersError
        If the key file may be read by group or others.

    Security
    --------
    See :class:`UnbalancedClient` and :class:`UnbalancedServer`: the server learns the
    client's number of distinct IDs (and the intersection only with ``reveal_to_server``); the
    client learns the intersection and the server's number of distinct IDs. No ID, hash of an
    ID, or key crosses.

    Examples
    --------
    >>> from psi._unbalanced import run_unbalanced
    >>> from psi._unbalanced_oprf import OprfKey, ServerTagTable
    >>> key = OprfKey.generate()
    >>> table = ServerTagTable.precompute(["u1", "u2", "u3"], key, n_jobs=1)
    >>> result = run_unbalanced(["u3", "u9", "u1"], table, key, reveal_to_server=True)
    >>> sorted(zip(result.client_rows, result.server_rows))
    [(0, 2), (2, 0)]
    """
    if len(names) != 2 or names[0] == names[1]:
        raise ParameterError("names must be two distinct party names")
    table = server if isinstance(server, ServerTagTable) else ServerTagTable.load(server)
    oprf_key = key if isinstance(key, OprfKey) else OprfKey.load(key)
    cached = (
        client_tag_set
        if client_tag_set is None or isinstance(client_tag_set, TagSet)
        else TagSet.load(client_tag_set)
    )
    client = UnbalancedClient(
        client_ids,
        tag_set=cached,
        chunk_points=chunk_points,
        reveal_to_server=reveal_to_server,
    )
    server_role = UnbalancedServer(table, oprf_key, chunk_tags=chunk_tags)
    client_name, server_name = names
    roles: dict[str, UnbalancedClient | UnbalancedServer] = {
        client_name: client,
        server_name: server_role,
    }
    transport = InMemoryTransport(names, keep_payloads=keep_payloads)
    _send(transport, client_name, server_name, client.start())
    while transport.has_pending():
        for me in names:
            while (item := transport.receive(me)) is not None:
                peer, frame = item
                out = roles[me].receive(UNBALANCED_REGISTRY.decode(frame))
                _send(transport, me, peer, out)
    for who, role in ((client_name, client), (server_name, server_role)):
        if role.state is not UnbalancedState.DONE:
            raise LocalProtocolError(f"{who}: protocol stalled in state {role.state.name}")
    assert client.tag_set is not None
    server_rows = server_role.intersection_rows if reveal_to_server else None
    return UnbalancedPsiResult(client.intersection_rows, server_rows, client.tag_set, transport)
