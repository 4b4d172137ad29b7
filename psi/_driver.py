"""In-process drivers: run the PSI roles over an :class:`~protocols.transport.InMemoryTransport`.

Every envelope a role returns is encoded to bytes with :data:`~psi.REGISTRY`, sent through the
transport (which records it in its transcript), and decoded again on the receiving side, exactly
as a networked runner would.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from protocols.errors import LocalProtocolError, ParameterError, RemoteProtocolError
from protocols.transport import InMemoryTransport
from protocols.wire import Envelope
from psi._engine import PsiEngine
from psi._messages import REGISTRY
from psi._roles import DEFAULT_CHUNK_POINTS, PsiInitiator, PsiOutput, PsiResponder, PsiState

__all__ = ["MultiPartyPsiResult", "TwoPartyPsiResult", "run_multi_party", "run_two_party"]

_Role = PsiInitiator | PsiResponder


@dataclass(frozen=True)
class TwoPartyPsiResult:
    """Result of :func:`run_two_party`: what each party learned, and the transcript.

    Attributes
    ----------
    a, b : PsiOutput
        What the initiator (``a``) and the responder (``b``) learned: their own rows of the
        intersection in the common order (or ``None``), and ``|A ∩ B|`` (or ``None``).
    transport : InMemoryTransport
        The transport, with the transcript of every frame (sizes; payloads if kept).

    Security
    --------
    Holds both parties' outputs because both ran in this process; across organisations each
    party sees only its own :class:`PsiOutput`.
    """

    a: PsiOutput
    b: PsiOutput
    transport: InMemoryTransport

    @property
    def reveal(self) -> str:
        """The session's reveal mode."""
        return self.a.reveal

    @property
    def rows_a(self) -> np.ndarray | None:
        """Party a's rows of the intersection (``None`` if a did not learn it)."""
        return self.a.rows

    @property
    def rows_b(self) -> np.ndarray | None:
        """Party b's rows of the intersection (``None`` if b did not learn it)."""
        return self.b.rows

    @property
    def bytes_exchanged(self) -> int:
        """Total size of all frames, both directions."""
        return self.transport.bytes_sent()


class MultiPartyPsiResult(NamedTuple):
    """Result of :func:`run_multi_party`.

    Attributes
    ----------
    rows : dict of str to list of int
        Each party's row indices of the common intersection, all in one common order.
    transport : InMemoryTransport
        The transport, with the transcript of every frame.
    """

    rows: dict[str, list[int]]
    transport: InMemoryTransport


def _send(transport: InMemoryTransport, sender: str, receiver: str, out: list[Envelope]) -> None:
    for env in out:
        frame = REGISTRY.encode(env.message, session_id=env.session_id, round_index=env.round_index)
        transport.send(
            sender,
            receiver,
            frame,
            message_type=type(env.message).__name__,
            round_index=env.round_index,
        )


def _pump(transport: InMemoryTransport, roles: Mapping[tuple[str, str], _Role]) -> None:
    """Deliver frames until none is pending. ``roles[(me, peer)]`` handles frames from ``peer``."""
    while transport.has_pending():
        for me in transport.parties:
            while (item := transport.receive(me)) is not None:
                peer, frame = item
                role = roles.get((me, peer))
                if role is None:
                    raise RemoteProtocolError(f"{me!r} has no PSI session with {peer!r}")
                _send(transport, me, peer, role.receive(REGISTRY.decode(frame)))


def _check_state(role: _Role, expected: PsiState, who: str) -> None:
    if role.state is not expected:
        raise LocalProtocolError(f"{who}: protocol stalled in state {role.state.name}")


def run_two_party(
    ids_a: Sequence[str],
    ids_b: Sequence[str],
    *,
    names: tuple[str, str] = ("a", "b"),
    reveal: str = "both",
    n_jobs: int | None = None,
    engine: PsiEngine | None = None,
    hash_to_curve: str = "sha256",
    chunk_points: int = DEFAULT_CHUNK_POINTS,
    keep_payloads: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> TwoPartyPsiResult:
    """Run two-party ECDH-PSI in process: party a is the initiator, party b the responder.

    Parameters
    ----------
    ids_a, ids_b : sequence of str
        Each party's IDs; duplicates count once (first row).
    names : tuple of two str, default ("a", "b")
        Party names in the transcript.
    reveal : {"both", "receiver", "cardinality"}, default "both"
        ``"both"``: both parties learn the intersection. ``"receiver"``: only party a does.
        ``"cardinality"``: both learn only its size.
    n_jobs : int, optional
        Worker processes for the arithmetic (``None``: all cores; ``1``: this process only).
        Inputs of at most a few thousand IDs are computed in process whatever ``n_jobs`` says.
        Ignored if ``engine`` is given. Workers are spawned and import the main module: in a
        script, call this under ``if __name__ == "__main__":`` (see :class:`PsiEngine`).
    engine : PsiEngine, optional
        A running engine to reuse across sessions (not closed here). Default: a new engine
        with ``n_jobs`` workers, closed before returning.
    hash_to_curve : {"sha256", "elligator2"}, default "sha256"
        The hash-to-curve map (see ``psi._ecdh``).
    chunk_points : int, default 65536
        Points per message.
    keep_payloads : bool, default False
        Keep each frame's bytes in the transcript (audits, tests).
    progress : callable, optional
        Called as ``progress(done, total)`` with the number of X25519 multiplications done so
        far and in all (``2 * (n_a + n_b)`` for ``n_a``, ``n_b`` distinct IDs), after each task.

    Returns
    -------
    TwoPartyPsiResult
        ``result.a`` and ``result.b`` (:class:`PsiOutput`): with ``"both"``,
        ``ids_a[result.a.rows[k]] == ids_b[result.b.rows[k]]`` for every k.

    Raises
    ------
    ParameterError
        If the names are not two distinct strings, or ``reveal``, ``hash_to_curve``,
        ``n_jobs``, ``engine`` or ``chunk_points`` is invalid.
    DataError
        If an ID is not a ``str`` (or not encodable as UTF-8).

    Security
    --------
    See :class:`PsiInitiator`: each party learns the other's number of distinct IDs; who learns
    the intersection or only its size depends on ``reveal``; no ID or hash of an ID crosses.

    Examples
    --------
    >>> from psi import run_two_party
    >>> result = run_two_party(["u1", "u2", "u3"], ["u3", "u9", "u1"], reveal="receiver")
    >>> sorted(result.a.rows.tolist()), result.b.rows, result.b.cardinality
    ([0, 2], None, None)
    """
    if len(names) != 2 or names[0] == names[1]:
        raise ParameterError("names must be two distinct party names")
    if engine is not None and not isinstance(engine, PsiEngine):
        raise ParameterError("engine must be a PsiEngine")
    own_engine = PsiEngine(n_jobs) if engine is None else None
    active = engine if engine is not None else own_engine
    assert active is not None
    name_a, name_b = names
    try:
        initiator = PsiInitiator(
            ids_a,
            chunk_points=chunk_points,
            reveal=reveal,
            hash_to_curve=hash_to_curve,
            engine=active,
        )
        responder = PsiResponder(ids_b, reveal=reveal, hash_to_curve=hash_to_curve, engine=active)
        transport = InMemoryTransport(names, keep_payloads=keep_payloads)
        previous_hook = active.on_progress
        if progress is not None:
            total = 2 * (initiator.n_items + responder.n_items)
            done = 0

            def hook(n_points: int) -> None:
                nonlocal done
                done += n_points
                progress(done, total)

            active.on_progress = hook
        try:
            _send(transport, name_a, name_b, initiator.start())
            _pump(transport, {(name_a, name_b): initiator, (name_b, name_a): responder})
        finally:
            active.on_progress = previous_hook
    finally:
        if own_engine is not None:
            own_engine.close()
    _check_state(initiator, PsiState.DONE, name_a)
    _check_state(responder, PsiState.DONE, name_b)
    assert initiator.result is not None and responder.result is not None
    return TwoPartyPsiResult(initiator.result, responder.result, transport)


def _final_positions(pairwise: Mapping[str, list[int]]) -> tuple[list[int], dict[str, list[int]]]:
    """Leader's rows of the common intersection and, per peer, positions in its pairwise list.

    The final order is the first pairwise order restricted to the common rows.
    """
    lists = list(pairwise.values())
    common = set(lists[0]).intersection(*map(set, lists[1:]))
    final = [row for row in lists[0] if row in common]
    positions = {}
    for peer, rows in pairwise.items():
        where = {row: k for k, row in enumerate(rows)}
        positions[peer] = [where[row] for row in final]
    return final, positions


def run_multi_party(
    ids: Mapping[str, Sequence[str]],
    *,
    leader: str | None = None,
    chunk_points: int = DEFAULT_CHUNK_POINTS,
    keep_payloads: bool = False,
) -> MultiPartyPsiResult:
    """Intersect the ID sets of two or more parties in process.

    The leader runs two-party PSI (as initiator) with every other party. With more than two
    parties it intersects the pairwise results over its own rows and sends each party an
    :class:`IntersectionPositions` message: positions in that party's pairwise list, in the
    final order. With two parties this is :func:`run_two_party`.

    Parameters
    ----------
    ids : mapping of str to sequence of str
        Each party's IDs by party name; duplicates count once (first row).
    leader : str, optional
        The leader (e.g. the label holder). Default: the first party.
    chunk_points : int, default 65536
        Points per message.
    keep_payloads : bool, default False
        Keep each frame's bytes in the transcript.

    Returns
    -------
    MultiPartyPsiResult
        ``(rows, transport)``; ``rows[p]`` indexes party ``p``'s input, all in one order.

    Raises
    ------
    ParameterError
        Fewer than two parties, an unknown leader, or ``chunk_points`` out of range.
    DataError
        If an ID is not a ``str``.

    Security
    --------
    With more than two parties the leader learns every pairwise intersection with itself and
    each other party learns its pairwise intersection with the leader, not just the common one
    (a later version removes this). Every party learns the number of distinct IDs of the
    parties it runs PSI with. No ID or hash of an ID crosses.
    """
    names = list(ids)
    if len(names) < 2:
        raise ParameterError(f"PSI needs at least 2 parties, got {len(names)}")
    if leader is None:
        leader = names[0]
    if leader not in ids:
        raise ParameterError(f"leader {leader!r} is not one of the parties")
    peers = [name for name in names if name != leader]
    follow = len(peers) > 1
    initiators = {
        peer: PsiInitiator(ids[leader], chunk_points=chunk_points, positions_follow=follow)
        for peer in peers
    }
    responders = {peer: PsiResponder(ids[peer]) for peer in peers}
    roles: dict[tuple[str, str], _Role] = {}
    for peer in peers:
        roles[(leader, peer)] = initiators[peer]
        roles[(peer, leader)] = responders[peer]
    transport = InMemoryTransport(names, keep_payloads=keep_payloads)
    for peer in peers:
        _send(transport, leader, peer, initiators[peer].start())
    _pump(transport, roles)

    if follow:
        for peer in peers:
            _check_state(initiators[peer], PsiState.SEND_POSITIONS, leader)
        _, positions = _final_positions({peer: initiators[peer].pairwise_rows for peer in peers})
        for peer in peers:
            _send(transport, leader, peer, initiators[peer].send_positions(positions[peer]))
        _pump(transport, roles)
    for peer in peers:
        _check_state(initiators[peer], PsiState.DONE, leader)
        _check_state(responders[peer], PsiState.DONE, peer)
    leader_rows = initiators[peers[0]].intersection_rows
    rows = {
        name: leader_rows if name == leader else responders[name].intersection_rows
        for name in names
    }
    return MultiPartyPsiResult(rows, transport)
