"""In-process drivers: run the PSI roles over an :class:`~protocols.transport.InMemoryTransport`.

Every envelope a role returns is encoded to bytes with :data:`~psi.REGISTRY`, sent through the
transport (which records it in its transcript), and decoded again on the receiving side, exactly
as a networked runner would.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

from protocols.errors import LocalProtocolError, ParameterError, RemoteProtocolError
from protocols.transport import InMemoryTransport
from protocols.wire import Envelope
from psi._messages import REGISTRY
from psi._roles import DEFAULT_CHUNK_POINTS, PsiInitiator, PsiResponder, PsiState

__all__ = ["MultiPartyPsiResult", "TwoPartyPsiResult", "run_multi_party", "run_two_party"]

_Role = PsiInitiator | PsiResponder


class TwoPartyPsiResult(NamedTuple):
    """Result of :func:`run_two_party`.

    Attributes
    ----------
    rows_a, rows_b : list of int
        Each party's row indices (into its own input) of the intersection, in the common order.
    transport : InMemoryTransport
        The transport, with the transcript of every frame.
    """

    rows_a: list[int]
    rows_b: list[int]
    transport: InMemoryTransport


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
    chunk_points: int = DEFAULT_CHUNK_POINTS,
    keep_payloads: bool = False,
) -> TwoPartyPsiResult:
    """Run two-party ECDH-PSI in process: party a is the initiator, party b the responder.

    Parameters
    ----------
    ids_a, ids_b : sequence of str
        Each party's IDs; duplicates count once (first row).
    names : tuple of two str, default ("a", "b")
        Party names in the transcript.
    chunk_points : int, default 65536
        Points per message.
    keep_payloads : bool, default False
        Keep each frame's bytes in the transcript (audits, tests).

    Returns
    -------
    TwoPartyPsiResult
        ``(rows_a, rows_b, transport)``: ``ids_a[rows_a[k]] == ids_b[rows_b[k]]`` for every k.

    Raises
    ------
    ParameterError
        If the names are not two distinct strings or ``chunk_points`` is out of range.
    DataError
        If an ID is not a ``str``.

    Security
    --------
    See :class:`PsiInitiator`: each party learns the other's number of distinct IDs and the
    intersection; no ID or hash of an ID crosses.
    """
    if len(names) != 2 or names[0] == names[1]:
        raise ParameterError("names must be two distinct party names")
    name_a, name_b = names
    initiator = PsiInitiator(ids_a, chunk_points=chunk_points)
    responder = PsiResponder(ids_b)
    transport = InMemoryTransport(names, keep_payloads=keep_payloads)
    _send(transport, name_a, name_b, initiator.start())
    _pump(transport, {(name_a, name_b): initiator, (name_b, name_a): responder})
    _check_state(initiator, PsiState.DONE, name_a)
    _check_state(responder, PsiState.DONE, name_b)
    return TwoPartyPsiResult(initiator.intersection_rows, responder.intersection_rows, transport)


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
