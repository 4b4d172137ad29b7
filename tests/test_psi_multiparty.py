"""Tests for N-party PSI (``psi._multiparty``): correctness, common order, leakage, bad input.

The leakage tests know every party's secret scalars (read from the roles right after
construction) and recompute what each party could link: a received value is *linkable* for a
party if it equals, up to an exponent that party knows, a value it can compute alone (a hash of a
guessed ID) or a value from another message it received. Negative controls break the protocol
on purpose (no ring mask, no match key, no reshuffle by the leader) and check that the same
assertions then fail.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import hashlib
import itertools
import pickle
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import nacl.bindings
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.errors import (
    DataError,
    LocalProtocolError,
    ParameterError,
    RemoteProtocolError,
)
from protocols.wire import Envelope, Message
from psi import _ed25519 as ed
from psi import _multiparty as mp
from psi._multiparty import (
    MAX_ITEMS,
    REVEAL_MODES,
    NPartyPsiParty,
    NPartyPsiState,
    NPartyRole,
    run_n_party,
)
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

ONE = (1).to_bytes(32, "little")  # the scalar 1
P = ed.POINT_BYTES
# Encodings that are not valid prime-order group elements: all zeros (y = 0, order 4), the
# identity, the order-2 point (y = -1), a non-canonical y (>= 2^255 - 19), the top bit set on the
# identity, and an order-8 point from libsodium's small-order blocklist.
INVALID_POINTS = [
    bytes(32),
    ONE,
    (2**255 - 20).to_bytes(32, "little"),
    (2**255 - 18).to_bytes(32, "little"),
    (1 + 2**255).to_bytes(32, "little"),
    bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),
]
STRANGER = ed.hash_to_group([b"not an id of anyone"], b"")  # a valid point nobody sent
MESSAGE_TYPES: list[type[Message]] = [
    PartyHello,
    RingPoints,
    MaskedPseudonyms,
    BlindedMaskedPseudonyms,
    LeaderMatchKeys,
    MatchKeySet,
    MatchedPositions,
    IntersectionPseudonyms,
    IntersectionCount,
]
ROUNDS = {
    PartyHello: ROUND_HELLO,
    RingPoints: ROUND_RING,
    MaskedPseudonyms: ROUND_MASKED,
    BlindedMaskedPseudonyms: ROUND_BLINDED,
    LeaderMatchKeys: ROUND_MATCH_KEYS,
    MatchKeySet: ROUND_MATCH_KEYS,
    MatchedPositions: ROUND_POSITIONS,
    IntersectionPseudonyms: ROUND_PSEUDONYMS,
    IntersectionCount: ROUND_POSITIONS,
}


# -- helpers ----------------------------------------------------------------------------------
def wire(env: Envelope) -> Envelope:
    """Encode and decode, as a real transport would."""
    frame = N_PARTY_REGISTRY.encode(
        env.message, session_id=env.session_id, round_index=env.round_index
    )
    return N_PARTY_REGISTRY.decode(frame)


def mixed_order_point() -> bytes:
    """A point on the curve but outside the prime-order subgroup (valid point + order-8 point)."""
    good = ed.hash_to_group([b"x"], b"")
    return nacl.bindings.crypto_core_ed25519_add(good, INVALID_POINTS[-1])


Item = tuple[str, str, Envelope]  # (sender, receiver, envelope)


class Net:
    """All parties in one process, driven step by step, keeping every delivered message.

    ``secrets[name]`` holds the party's scalars (ring key, ring mask, match scalar), read right
    after construction, for the leakage tests.
    """

    def __init__(
        self,
        ids: Mapping[str, Sequence[str]],
        leader: str | None = None,
        combiner: str | None = None,
        *,
        tamper: Callable[[NPartyPsiParty], None] | None = None,
        reveal: str = "both",
    ) -> None:
        self.ids = dict(ids)
        self.names = list(ids)
        self.leader = leader or self.names[0]
        self.combiner = combiner or next(n for n in self.names if n != self.leader)
        self.roles = {
            name: NPartyPsiParty(
                name,
                ids[name],
                parties=self.names,
                leader=self.leader,
                combiner=self.combiner,
                reveal=reveal,
            )
            for name in self.names
        }
        if tamper is not None:
            for role in self.roles.values():
                tamper(role)
        self.secrets = {
            name: [role._ring_key, role._ring_mask, role._match_scalar]
            for name, role in self.roles.items()
        }
        self.pending: collections.deque[Item] = collections.deque()
        self.log: list[Item] = []
        for name, role in self.roles.items():
            self.queue(name, role.start())

    def queue(self, sender: str, out: Iterable[mp.Outgoing]) -> None:
        for receiver, env in out:
            self.pending.append((sender, receiver, wire(env)))

    def deliver(self, item: Item) -> None:
        sender, receiver, env = item
        out = self.roles[receiver].receive(sender, env)
        self.log.append(item)
        self.queue(receiver, out)

    def take(self, pred: Callable[[Item], bool]) -> Item:
        """Deliver (in global FIFO order) until the next message satisfies ``pred``; return it
        undelivered."""
        while self.pending:
            if pred(self.pending[0]):
                return self.pending.popleft()
            self.deliver(self.pending.popleft())
        raise AssertionError("no such message")

    def run(self) -> Net:
        while self.pending:
            self.deliver(self.pending.popleft())
        return self

    def rows(self) -> dict[str, list[int]]:
        return {name: role.intersection_rows for name, role in self.roles.items()}

    def received(self, name: str) -> list[tuple[str, Message]]:
        return [(s, env.message) for s, r, env in self.log if r == name]


def first_rows(ids: Sequence[str]) -> dict[str, int]:
    return {x: i for i, x in reversed(list(enumerate(ids)))}


def check_rows(ids: Mapping[str, Sequence[str]], rows: Mapping[str, list[int]]) -> list[str]:
    """Every party's rows give the same ID sequence, equal to the set intersection."""
    common = set.intersection(*(set(v) for v in ids.values()))
    sequences = [[ids[name][r] for r in rows[name]] for name in ids]
    assert all(seq == sequences[0] for seq in sequences)
    assert set(sequences[0]) == common and len(sequences[0]) == len(common)
    for name in ids:
        first = first_rows(ids[name])
        assert all(first[ids[name][r]] == r for r in rows[name])  # duplicates: first row
    return sequences[0]


def check_outputs(
    ids: Mapping[str, Sequence[str]],
    outputs: Mapping[str, mp.NPartyPsiOutput | None],
    reveal: str,
    leader: str,
    combiner: str,
) -> None:
    """Each party learned exactly what ``reveal`` allows, and it is right."""
    common = set.intersection(*(set(v) for v in ids.values()))
    sizes = {name: len(set(v)) for name, v in ids.items()}
    for name, output in outputs.items():
        assert output is not None and output.reveal == reveal
        assert output.party_sizes == sizes
        learns_rows = reveal == "both" or (reveal == "receiver" and name == leader)
        if learns_rows:
            assert output.rows is not None
            assert {ids[name][r] for r in output.rows} == common
        else:
            assert output.rows is None
        learns_count = reveal != "receiver" or name in (leader, combiner)
        assert output.cardinality == (len(common) if learns_count else None)
    if reveal == "both":
        check_rows(ids, {n: list(o.rows or ()) for n, o in outputs.items() if o is not None})


def snapshot(role: NPartyPsiParty) -> dict[str, Any]:
    return {key: copy.deepcopy(value) for key, value in vars(role).items()}


def assert_rejected(
    role: NPartyPsiParty, sender: str, env: Envelope, match: str | None = None
) -> None:
    before = snapshot(role)
    with pytest.raises(RemoteProtocolError, match=match):
        role.receive(sender, env)
    assert snapshot(role) == before


def with_message(env: Envelope, **changes: Any) -> Envelope:
    message = dataclasses.replace(env.message, **changes)  # type: ignore[type-var]
    return Envelope(env.session_id, env.round_index, message)


def is_msg(cls: type[Message], receiver: str | None = None) -> Callable[[Item], bool]:
    return lambda item: isinstance(item[2].message, cls) and receiver in (None, item[1])


def points_of(message: Message) -> bytes:
    return getattr(message, "points", b"")


def split(blob: bytes) -> list[bytes]:
    return [blob[i : i + P] for i in range(0, len(blob), P)]


# -- correctness ------------------------------------------------------------------------------
ID_POOL = ["a", "b", "c", "", "Zoë", "名前", "🙂🙃", "x" * 300, "id\x00nul", "12", "012"] + [
    f"user-{i}" for i in range(12)
]
ids_strategy = st.lists(st.sampled_from(ID_POOL) | st.text(max_size=8), max_size=12)


@settings(max_examples=30, deadline=None)
@given(
    sets=st.lists(ids_strategy, min_size=3, max_size=4),
    leader_index=st.integers(0, 3),
    combiner_shift=st.integers(1, 3),
)
def test_n_party_equals_set_intersection(
    sets: list[list[str]], leader_index: int, combiner_shift: int
) -> None:
    n = len(sets)
    ids = {f"party{k}": s for k, s in enumerate(sets)}
    leader = f"party{leader_index % n}"
    combiner = f"party{(leader_index + combiner_shift) % n}"
    if combiner == leader:
        combiner = f"party{(leader_index + 1) % n}"
    result = run_n_party(ids, leader=leader, combiner=combiner)
    check_rows(ids, result.rows)


@settings(max_examples=20, deadline=None)
@given(
    sets=st.lists(ids_strategy, min_size=3, max_size=3),
    reveal=st.sampled_from(REVEAL_MODES),
    leader_index=st.integers(0, 2),
    combiner_shift=st.integers(1, 2),
)
def test_reveal_modes_equal_set_intersection(
    sets: list[list[str]], reveal: str, leader_index: int, combiner_shift: int
) -> None:
    ids = {f"party{k}": s for k, s in enumerate(sets)}
    leader = f"party{leader_index}"
    combiner = f"party{(leader_index + combiner_shift) % 3}"
    result = run_n_party(ids, leader=leader, combiner=combiner, reveal=reveal)
    common = set.intersection(*(set(s) for s in sets))
    assert result.cardinality == len(common) and result.reveal == reveal
    check_outputs(ids, result.outputs, reveal, leader, combiner)
    expected_keys = {"both": set(ids), "receiver": {leader}, "cardinality": set()}[reveal]
    assert set(result.rows) == expected_keys
    for name, rows in result.rows.items():
        assert rows == list(result.outputs[name].rows or ())
        assert sorted(ids[name][r] for r in rows) == sorted(common)


@pytest.mark.parametrize(("leader", "combiner"), list(itertools.permutations("pqrs", 2)))
def test_every_leader_and_combiner(leader: str, combiner: str) -> None:
    ids = {
        "p": ["u1", "u2", "u3", "u4", "u5", "u6"],
        "q": ["u6", "u5", "u4", "u3", "u9"],
        "r": ["u3", "u4", "u5", "u6", "u7", "u3"],
        "s": ["u8", "u6", "u4", "u3"],
    }
    result = run_n_party(ids, leader=leader, combiner=combiner)
    assert sorted(check_rows(ids, result.rows)) == ["u3", "u4", "u6"]


@pytest.mark.parametrize(
    "sets",
    [
        [[], [], []],
        [["x"], [], ["x"]],
        [["x", "y"], ["z"], ["x", "y"]],
        [["x", "x", "y"], ["y", "y", "x"], ["y", "x"]],
        [["same"], ["same"], ["same"], ["same"], ["same"]],
    ],
)
def test_edge_cases(sets: list[list[str]]) -> None:
    ids = {f"party{k}": s for k, s in enumerate(sets)}
    net = Net(ids).run()
    check_rows(ids, net.rows())
    assert all(role.state is NPartyPsiState.DONE for role in net.roles.values())


def test_empty_intersection_is_a_valid_result() -> None:
    ids = {"a": ["1", "2"], "b": ["2", "3"], "c": ["3", "1"]}  # every pair meets, not all three
    assert run_n_party(ids).rows == {"a": [], "b": [], "c": []}


def test_rows_are_in_the_order_of_the_pseudonyms() -> None:
    ids = {"a": [f"u{i}" for i in range(20)], "b": [f"u{i}" for i in range(20)][::-1]}
    ids["c"] = [f"u{i}" for i in range(5, 25)]
    net = Net(ids, leader="b", combiner="c").run()
    sequence = check_rows(ids, net.rows())
    salt = net.roles["a"]._salt
    assert salt is not None
    exponent = ONE
    for scalars in net.secrets.values():
        assert scalars[0] is not None
        exponent = ed.multiply_scalars(exponent, scalars[0])
    pseudonyms = split(
        ed.scalar_mult(exponent, ed.hash_to_group([x.encode() for x in sequence], salt))
    )
    assert pseudonyms == sorted(pseudonyms)


def test_roster_order_and_defaults() -> None:
    ids = {"z": ["1", "2"], "y": ["2"], "x": ["2", "3"]}
    net = Net(ids)
    assert (net.leader, net.combiner) == ("z", "y")
    assert [net.roles[n].role for n in ids] == [
        NPartyRole.LEADER,
        NPartyRole.COMBINER,
        NPartyRole.MEMBER,
    ]
    result = run_n_party(ids)
    assert {e.message_type for e in result.transport.transcript if e.receiver == "z"} >= {
        "MaskedPseudonyms",
        "MatchedPositions",
    }


def test_reordering_network_with_ready() -> None:
    """Frames from different senders overtake each other; each channel stays in order."""
    ids = {
        "a": [f"u{i}" for i in range(8)],
        "b": [f"u{i}" for i in range(2, 9)],
        "c": [f"u{i}" for i in range(0, 9, 2)],
        "d": [f"u{i}" for i in range(9)],
    }
    for seed in range(6):
        rng = random.Random(seed)
        net = Net(ids, leader="c", combiner="a")
        channels: dict[tuple[str, str], collections.deque[Envelope]] = collections.defaultdict(
            collections.deque
        )
        early = 0
        while net.pending or any(channels.values()):
            while net.pending:
                s, r, env = net.pending.popleft()
                channels[(s, r)].append(env)
            live = [key for key, queue in channels.items() if queue]
            ready = [key for key in live if net.roles[key[1]].ready(key[0])]
            assert ready, "deadlock"
            for s, r in live:
                if (s, r) not in ready:  # delivering now is refused, and changes nothing
                    early += 1
                    assert_rejected(net.roles[r], s, channels[(s, r)][0], "cannot be processed")
            s, r = rng.choice(ready)
            net.deliver((s, r, channels[(s, r)].popleft()))
        assert sorted(check_rows(ids, net.rows())) == ["u2", "u4", "u6"]
        if seed == 0:
            assert early > 0  # the schedule did reorder across channels


# -- transcript -------------------------------------------------------------------------------
def test_transcript_shape() -> None:
    ids = {
        "a": [f"u{i}" for i in range(10)],
        "b": [f"u{i}" for i in range(5, 15)],
        "c": [f"u{i}" for i in range(0, 15, 3)],
        "d": [f"u{i}" for i in range(12)],
    }
    result = run_n_party(ids, leader="c", combiner="a", keep_payloads=True)
    final = check_rows(ids, result.rows)
    assert sorted(final) == ["u6", "u9"]
    sizes = {n: len(v) for n, v in ids.items()}
    counts = collections.Counter(
        (e.message_type, e.sender, e.receiver, e.round_index) for e in result.transport.transcript
    )
    expected: collections.Counter[tuple[str, str, str, int]] = collections.Counter()
    ring = list(ids)
    for s, r in itertools.permutations(ring, 2):
        expected[("PartyHello", s, r, ROUND_HELLO)] = 1
    for k, s in enumerate(ring):
        expected[("RingPoints", s, ring[(k + 1) % 4], ROUND_RING)] = 4
    for s in ["a", "b", "d"]:
        expected[("MaskedPseudonyms", s, "c", ROUND_MASKED)] = 1
        expected[("BlindedMaskedPseudonyms", "c", s, ROUND_BLINDED)] = 1
        expected[("IntersectionPseudonyms", "c", s, ROUND_PSEUDONYMS)] = 1
    expected[("LeaderMatchKeys", "c", "a", ROUND_MATCH_KEYS)] = 1
    expected[("MatchKeySet", "b", "a", ROUND_MATCH_KEYS)] = 1
    expected[("MatchKeySet", "d", "a", ROUND_MATCH_KEYS)] = 1
    expected[("MatchedPositions", "a", "c", ROUND_POSITIONS)] = 1
    assert counts == expected
    for entry in result.transport.transcript:
        assert entry.payload is not None
        env = N_PARTY_REGISTRY.decode(entry.payload)
        message = env.message
        if isinstance(message, RingPoints):
            origin = ring[(ring.index(entry.receiver) - message.hop) % 4]
            assert len(message.points) == P * sizes[origin]
        elif isinstance(message, (MaskedPseudonyms, BlindedMaskedPseudonyms)):
            party = entry.sender if isinstance(message, MaskedPseudonyms) else entry.receiver
            assert len(message.points) == P * sizes[party]
        elif isinstance(message, (LeaderMatchKeys, MatchKeySet)):
            assert len(message.points) == P * sizes[entry.sender]
        elif isinstance(message, MatchedPositions):
            assert len(message.positions) == 8 * len(final)  # the leader gets no more
        elif isinstance(message, IntersectionPseudonyms):
            assert len(message.points) == P * len(final)


@pytest.mark.parametrize("reveal", ["receiver", "cardinality"])
def test_transcript_of_restricted_modes(reveal: str) -> None:
    """``receiver``: no pseudonyms leave the leader; ``cardinality``: nobody gets pseudonyms or
    positions, only counts."""
    ids = {
        "a": [f"u{i}" for i in range(10)],
        "b": [f"u{i}" for i in range(5, 15)],
        "c": [f"u{i}" for i in range(0, 15, 3)],
        "d": [f"u{i}" for i in range(12)],
    }
    leader, combiner = "c", "a"
    result = run_n_party(ids, leader=leader, combiner=combiner, keep_payloads=True, reveal=reveal)
    assert result.cardinality == 2
    entries = result.transport.transcript
    types = collections.Counter(
        (e.message_type, e.sender, e.receiver, e.round_index) for e in entries
    )
    assert not any(key[0] == "IntersectionPseudonyms" for key in types)
    if reveal == "receiver":
        assert types[("MatchedPositions", combiner, leader, ROUND_POSITIONS)] == 1
        assert not any(key[0] == "IntersectionCount" for key in types)
        assert sorted(ids[leader][r] for r in result.rows[leader]) == ["u6", "u9"]
        assert set(result.rows) == {leader}
    else:
        assert not any(key[0] == "MatchedPositions" for key in types)
        expected = {("IntersectionCount", combiner, leader, ROUND_POSITIONS): 1}
        for peer in ["a", "b", "d"]:
            expected[("IntersectionCount", leader, peer, ROUND_PSEUDONYMS)] = 1
        assert {k: v for k, v in types.items() if k[0] == "IntersectionCount"} == expected
        assert result.rows == {}
    # What each party receives after the match keys: nothing identifying.
    for entry in entries:
        assert entry.payload is not None
        message = N_PARTY_REGISTRY.decode(entry.payload).message
        if isinstance(message, IntersectionCount):
            assert message.count == 2
    for name in ids:
        received = {e.message_type for e in entries if e.receiver == name}
        assert "IntersectionPseudonyms" not in received
        if reveal == "cardinality":
            assert "MatchedPositions" not in received
    for name, output in result.outputs.items():
        learns_rows = reveal == "receiver" and name == leader
        assert (output.rows is not None) == learns_rows
        assert output.cardinality == (None if reveal == "receiver" and name in "bd" else 2)


@pytest.mark.parametrize("reveal", REVEAL_MODES)
def test_restricted_modes_refuse_rows(reveal: str) -> None:
    net = Net(IDS3, leader="p", combiner="q", reveal=reveal).run()
    for name, role in net.roles.items():
        assert role.state is NPartyPsiState.DONE and role.reveal == reveal
        if reveal == "both" or (reveal == "receiver" and name == "p"):
            assert sorted(IDS3[name][r] for r in role.intersection_rows) == ["u3", "u4", "u5"]
        else:
            with pytest.raises(LocalProtocolError, match=f"reveal={reveal!r}"):
                role.intersection_rows
        assert not role._match_scalar and not role._masked_index and not role._pi_keys


def test_hello_with_another_reveal_is_rejected() -> None:
    for mine, theirs in itertools.permutations(REVEAL_MODES, 2):
        roster = dict(parties=["p", "q", "r"], leader="p", combiner="q")
        role = NPartyPsiParty("q", ["x"], reveal=mine, **roster)  # type: ignore[arg-type]
        other = NPartyPsiParty("p", ["x"], reveal=theirs, **roster)  # type: ignore[arg-type]
        role.start()
        hello = next(env for receiver, env in other.start() if receiver == "q")
        assert_rejected(role, "p", wire(hello), "reveal mode")
    assert mp.roster_digest(["p", "q", "r"], "p", "q") == mp.roster_digest(
        ["p", "q", "r"], "p", "q", "both"
    )
    digests = {mp.roster_digest(["p", "q", "r"], "p", "q", mode) for mode in REVEAL_MODES}
    assert len(digests) == 3


def test_count_checked() -> None:
    net = Net(IDS3, leader="p", combiner="q", reveal="cardinality")
    item = net.take(is_msg(IntersectionCount, "p"))  # combiner to leader
    sender, receiver, env = item
    role = net.roles[receiver]
    assert env.message.count == 3  # type: ignore[attr-defined]
    for count in [-1, 5, 2**40]:
        assert_rejected(role, sender, with_message(env, count=count), "outside")
    net.deliver(item)
    for receiver in ["q", "r"]:
        item = net.take(is_msg(IntersectionCount, receiver))
        role = net.roles[receiver]
        assert_rejected(role, "p", with_message(item[2], count=5), "outside")
        if receiver == "q":  # the combiner knows the count and checks it
            assert_rejected(role, "p", with_message(item[2], count=2), "has 3 elements")
        net.deliver(item)
    net.run()
    assert all(role.output.cardinality == 3 for role in net.roles.values())  # type: ignore[union-attr]


def test_transcript_has_no_ids_or_hashes_of_ids() -> None:
    ids = {
        "a": [f"alice.customer.{i:05d}@example.com" for i in range(30)],
        "b": [f"alice.customer.{i:05d}@example.com" for i in range(10, 40)],
        "c": [f"alice.customer.{i:05d}@example.com" for i in range(0, 40, 2)],
    }
    net = Net(ids).run()
    check_rows(ids, net.rows())
    salt = net.roles["a"]._salt
    assert salt is not None
    frames = [
        N_PARTY_REGISTRY.encode(env.message, session_id=env.session_id, round_index=env.round_index)
        for _, _, env in net.log
    ]
    prefix = ed._HASH_TAG + len(salt).to_bytes(1, "big") + salt
    forbidden = []
    for item in set().union(*map(set, ids.values())):
        raw = item.encode()
        forbidden += [
            raw,
            raw[:12],
            hashlib.sha256(raw).digest(),
            hashlib.sha512(raw).digest()[:32],
            hashlib.sha512(prefix + raw).digest()[:32],
            ed.hash_to_group([raw], salt),
        ]
    for frame in frames:
        for needle in forbidden:
            assert needle not in frame


# -- leakage ----------------------------------------------------------------------------------
def exponents(scalars: Sequence[bytes | None]) -> list[bytes]:
    """Every product of a party's scalars and their inverses (each used at most once)."""
    out = set()
    for choice in itertools.product((0, 1, -1), repeat=len(scalars)):
        e = ONE
        for scalar, c in zip(scalars, choice):
            if c and scalar is not None:
                e = ed.multiply_scalars(e, scalar if c == 1 else ed.invert(scalar))
        out.add(e)
    return sorted(out)


class View:
    """What one party received, grouped by message, and what it could link."""

    def __init__(self, net: Net, name: str) -> None:
        self.net, self.name = net, name
        self.groups: dict[tuple[str, str, int], list[bytes]] = {}
        self.positions: list[bytes] = []
        for sender, message in net.received(name):
            if isinstance(message, MatchedPositions):
                self.positions.append(message.positions)
                continue
            hop = message.hop if isinstance(message, RingPoints) else 0
            self.groups[(type(message).__name__, sender, hop)] = split(points_of(message))
        self.exponents = exponents(net.secrets[name])

    def all_points(self) -> set[bytes]:
        return set().union(*map(set, self.groups.values()))

    def links(self) -> set[frozenset[tuple[str, str, int]]]:
        """Pairs of received messages that share a value up to an exponent this party knows."""
        found = set()
        sets = {label: set(points) for label, points in self.groups.items()}
        for e in self.exponents:
            for label, points in self.groups.items():
                if not points:
                    continue
                moved = set(split(ed.scalar_mult(e, b"".join(points))))
                for other, values in sets.items():
                    if other != label and moved & values:
                        found.add(frozenset({label, other}))
        return found

    def guessable(self, universe: Iterable[str]) -> set[bytes]:
        """Values this party can compute alone for any guessed ID."""
        salt = self.net.roles[self.name]._salt
        assert salt is not None
        hashed = ed.hash_to_group([x.encode() for x in universe], salt)
        return {v for e in self.exponents for v in split(ed.scalar_mult(e, hashed))}


def pseudonyms(net: Net, items: Iterable[str]) -> dict[str, bytes]:
    """F(x) = H(x)^(a_1 ... a_N), computed with every party's ring key."""
    items = sorted(set(items))
    salt = net.roles[net.names[0]]._salt
    assert salt is not None
    exponent = ONE
    for scalars in net.secrets.values():
        assert scalars[0] is not None
        exponent = ed.multiply_scalars(exponent, scalars[0])
    blob = ed.scalar_mult(exponent, ed.hash_to_group([x.encode() for x in items], salt))
    return dict(zip(items, split(blob)))


def allowed_links(net: Net, name: str) -> set[frozenset[tuple[str, str, int]]]:
    """The documented links: own ring list home <-> the final pseudonyms (non-leaders); the
    combiner's match keys among each other (the Venn-diagram counts)."""
    n = len(net.names)
    if name == net.leader:
        return set()
    predecessor = net.names[net.names.index(name) - 1]
    home = ("RingPoints", predecessor, n)
    allowed = {frozenset({home, ("IntersectionPseudonyms", net.leader, 0)})}
    if name == net.combiner:
        keys = [("LeaderMatchKeys", net.leader, 0), ("BlindedMaskedPseudonyms", net.leader, 0)]
        keys += [("MatchKeySet", m, 0) for m in net.names if m not in (net.leader, name)]
        allowed |= {frozenset(pair) for pair in itertools.combinations(keys, 2)}
    return allowed


LEAK_IDS = {
    "p": ["u1", "u2", "u3", "u4", "u5", "u6", "u7"],
    "q": ["u2", "u3", "u4", "u5", "u8", "u9"],
    "r": ["u3", "u4", "u5", "u6", "u9", "u10"],
    "s": ["u1", "u3", "u5", "u9", "u10", "u11"],
}


def test_what_each_party_can_link() -> None:
    net = Net(LEAK_IDS, leader="q", combiner="s").run()
    final = check_rows(LEAK_IDS, net.rows())
    assert sorted(final) == ["u3", "u5"]
    universe = set().union(*map(set, LEAK_IDS.values())) | {"u-other", "nobody"}
    f = pseudonyms(net, universe)
    leader_b = net.secrets["q"][2]
    assert leader_b is not None
    m = dict(zip(f, split(ed.scalar_mult(leader_b, b"".join(f.values())))))
    for name in net.names:
        view = View(net, name)
        received = view.all_points()
        # No party can test a guessed ID against anything it received.
        assert not received & view.guessable(universe), name
        # Cross-message links are exactly the documented ones.
        links = view.links()
        assert links <= allowed_links(net, name), (name, links - allowed_links(net, name))
        if name != net.leader:  # the control: links that must exist are found
            assert (
                frozenset(
                    {
                        ("RingPoints", net.names[net.names.index(name) - 1], 4),
                        ("IntersectionPseudonyms", "q", 0),
                    }
                )
                in links
            )
        # Pseudonyms reach a party only for the intersection; match keys only the combiner.
        assert received & set(f.values()) == (
            set() if name == net.leader else {f[x] for x in final}
        )
        if name == net.combiner:
            assert received & set(m.values()) == {
                m[x] for x in set(LEAK_IDS["q"]) | set(LEAK_IDS["p"]) | set(LEAK_IDS["r"])
            }
        else:
            assert not received & set(m.values())
    # The leader receives positions only: as many as the intersection has elements.
    leader_view = View(net, "q")
    assert [len(blob) for blob in leader_view.positions] == [8 * len(final)]
    # The combiner's match keys are never values it can compute from its own items.
    combiner = View(net, "s")
    own = split(b"".join(f[x] for x in LEAK_IDS["s"]))
    computable = {v for e in combiner.exponents for v in split(ed.scalar_mult(e, b"".join(own)))}
    keys = [
        label
        for label in combiner.groups
        if label[0] in ("LeaderMatchKeys", "MatchKeySet", "BlindedMaskedPseudonyms")
    ]
    assert len(keys) == 4
    for label in keys:
        assert not set(combiner.groups[label]) & computable
    # ... and it does see the Venn-diagram counts (the documented leak): e.g. |X_q & X_s|.
    s_mask = net.secrets["s"][2]
    assert s_mask is not None
    reply = combiner.groups[("BlindedMaskedPseudonyms", "q", 0)]
    own_keys = set(split(ed.scalar_mult(ed.invert(s_mask), b"".join(reply))))
    leader_keys = set(combiner.groups[("LeaderMatchKeys", "q", 0)])
    assert len(own_keys & leader_keys) == len(set(LEAK_IDS["q"]) & set(LEAK_IDS["s"]))


def test_negative_control_without_ring_mask() -> None:
    """Without the one-time ring mask, the successor gets plain hashes: a dictionary attack,
    and the intersection of its IDs with its predecessor's."""

    def no_mask(role: NPartyPsiParty) -> None:
        role._ring_mask = ONE

    ids = {name: LEAK_IDS[name] for name in ["p", "q", "r"]}
    net = Net(ids, leader="p", combiner="q", tamper=no_mask).run()
    check_rows(ids, net.rows())
    view = View(net, "q")
    guessed = view.guessable(ids["q"])
    assert set(view.groups[("RingPoints", "p", 1)]) & guessed  # the check above would fail
    salt = net.roles["q"]._salt
    assert salt is not None
    hashes = set(split(ed.hash_to_group([x.encode() for x in ids["p"]], salt)))
    assert set(view.groups[("RingPoints", "p", 1)]) == hashes


def test_negative_control_without_match_key() -> None:
    """With b = 1 the combiner would link the leader's keys to its own ring list (X_p & X_q)."""

    def no_match_key(role: NPartyPsiParty) -> None:
        if role.role is NPartyRole.LEADER:
            role._match_scalar = ONE

    ids = {name: LEAK_IDS[name] for name in ["p", "q", "r"]}
    net = Net(ids, leader="p", combiner="q", tamper=no_match_key).run()
    check_rows(ids, net.rows())
    links = View(net, "q").links()
    assert frozenset({("LeaderMatchKeys", "p", 0), ("RingPoints", "p", 3)}) in links
    assert not links <= allowed_links(net, "q")


def test_negative_control_without_reshuffle_links_combiner_keys() -> None:
    """If the leader did not reshuffle, the combiner would know the match key of each own ID."""

    def fixed_point_fraction(net: Net) -> float:
        s = net.secrets[net.combiner][2]
        assert s is not None
        sent = [
            msg
            for snd, rcv, env in net.log
            if snd == net.combiner and isinstance(msg := env.message, MaskedPseudonyms)
        ][0]
        got = [
            msg
            for snd, msg in net.received(net.combiner)
            if isinstance(msg, BlindedMaskedPseudonyms)
        ][0]
        # In request order, (F^s)^b; compare with what came back, position by position.
        b = net.secrets[net.leader][2]
        assert b is not None
        expected = split(ed.scalar_mult(b, sent.points))
        same = sum(x == y for x, y in zip(expected, split(got.points)))
        return same / len(expected)

    ids = {n: [f"u{i}" for i in range(30)] for n in ["p", "q", "r"]}
    assert fixed_point_fraction(Net(ids).run()) < 0.5  # a random permutation: ~1 fixed point
    original = mp._shuffled
    try:
        mp._shuffled = list  # type: ignore[assignment]
        assert fixed_point_fraction(Net(ids).run()) == 1.0
    finally:
        mp._shuffled = original


def test_leader_order_is_secret() -> None:
    ids = {n: [f"u{i}" for i in range(30)] for n in ["p", "q", "r"]}
    net = Net(ids).run()
    f = pseudonyms(net, ids["p"])
    b = net.secrets["p"][2]
    assert b is not None
    in_row_order = split(ed.scalar_mult(b, b"".join(f[x] for x in ids["p"])))
    (sent,) = [m for s, m in net.received("q") if isinstance(m, LeaderMatchKeys)]
    assert set(split(sent.points)) == set(in_row_order)
    assert sum(x == y for x, y in zip(split(sent.points), in_row_order)) < 15


def test_fresh_randomness_per_session() -> None:
    ids = {n: ["u1", "u2", "u3"] for n in ["p", "q", "r"]}
    first, second = Net(ids).run(), Net(ids).run()
    assert first.roles["p"].session_id != second.roles["p"].session_id
    assert all(a != b for a, b in zip(first.secrets["p"], second.secrets["p"]))
    assert first.roles["p"].party_sizes == {"p": 3, "q": 3, "r": 3}


def test_scalars_dropped_and_role_not_copyable() -> None:
    net = Net({n: ["u1", "u2"] for n in ["p", "q", "r", "s"]}).run()
    for role in net.roles.values():
        assert role._ring_key is None and role._ring_mask is None and role._match_scalar is None
    role = NPartyPsiParty("p", ["x"], parties=["p", "q", "r"], leader="p", combiner="q")
    with pytest.raises(TypeError):
        pickle.dumps(role)
    with pytest.raises(TypeError):
        copy.copy(role)
    with pytest.raises(TypeError):
        copy.deepcopy(role)


# -- malformed and unexpected messages --------------------------------------------------------
IDS3 = {
    "p": ["u1", "u2", "u3", "u4", "u5"],
    "q": ["u5", "u4", "u3", "u9"],
    "r": ["u3", "u5", "u7", "u4", "u8", "u0"],
}


def finish(net: Net, item: Item) -> None:
    """Deliver the genuine message after the rejected ones; the run still ends correctly."""
    net.deliver(item)
    net.run()
    assert sorted(check_rows(net.ids, net.rows())) == ["u3", "u4", "u5"]


def bad_point_variants(points: bytes) -> list[bytes]:
    out = [points[:-1], points + bytes(32), points[:-32]]
    if len(points) >= 2 * P:
        out.append(points[:P] * (len(points) // P))  # repeated
    for bad in [*INVALID_POINTS, mixed_order_point(), b"\xff" * 32]:
        out.append(bad + points[P:])
    return out


@pytest.mark.parametrize(
    ("cls", "receiver"),
    [
        (RingPoints, "q"),
        (MaskedPseudonyms, "p"),
        (BlindedMaskedPseudonyms, "q"),
        (BlindedMaskedPseudonyms, "r"),
        (LeaderMatchKeys, "q"),
        (MatchKeySet, "q"),
    ],
)
def test_bad_points_rejected(cls: type[Message], receiver: str) -> None:
    net = Net(IDS3, leader="p", combiner="q")
    item = net.take(is_msg(cls, receiver))
    sender, _, env = item
    role = net.roles[receiver]
    for blob in bad_point_variants(env.message.points):  # type: ignore[attr-defined]
        assert_rejected(role, sender, with_message(env, points=blob))
    finish(net, item)


def test_ring_hops_checked() -> None:
    net = Net(IDS3, leader="p", combiner="q")
    item = net.take(lambda it: isinstance(it[2].message, RingPoints) and it[2].message.hop == 2)
    sender, receiver, env = item
    role = net.roles[receiver]
    assert_rejected(role, sender, with_message(env, hop=3), "expected hop 2")
    assert_rejected(role, sender, with_message(env, hop=1), "expected hop 2")
    assert_rejected(role, sender, with_message(env, hop=0), "expected hop 2")
    assert_rejected(role, sender, Envelope(env.session_id, ROUND_MASKED, env.message), "round")
    other = next(n for n in IDS3 if n not in (sender, receiver))
    assert_rejected(
        role, other, env, "expected (MatchKeySet|MaskedPseudonyms|BlindedMasked|LeaderMatchKeys)"
    )
    assert_rejected(role, receiver, env, "not a peer")
    assert_rejected(role, "mallory", env, "not a peer")
    assert_rejected(role, sender, Envelope(bytes(16), env.round_index, env.message), "session")
    finish(net, item)


def test_replay_from_another_session() -> None:
    old = Net(IDS3, leader="p", combiner="q").run()
    net = Net(IDS3, leader="p", combiner="q")
    for cls in [RingPoints, MaskedPseudonyms, LeaderMatchKeys, BlindedMaskedPseudonyms]:
        item = net.take(is_msg(cls))
        sender, receiver, env = item
        replayed = next(
            e
            for s, r, e in old.log
            if (s, r) == (sender, receiver)
            and type(e.message) is cls
            and getattr(e.message, "hop", 0) == getattr(env.message, "hop", 0)
        )
        assert_rejected(net.roles[receiver], sender, replayed, "another session")
        net.deliver(item)
    item = net.take(is_msg(MatchedPositions))
    replayed = next(e for s, r, e in old.log if isinstance(e.message, MatchedPositions))
    assert_rejected(net.roles["p"], "q", replayed, "another session")
    net.deliver(item)
    item = net.take(is_msg(IntersectionPseudonyms, "r"))
    replayed = next(
        e for s, r, e in old.log if r == "r" and isinstance(e.message, IntersectionPseudonyms)
    )
    assert_rejected(net.roles["r"], "p", replayed, "another session")
    finish(net, item)


def test_replayed_hello_splits_the_session() -> None:
    """A hello from an old session is accepted (nonces are fresh), but the session ids then
    differ and the next frame is refused."""
    old = Net(IDS3, leader="p", combiner="q")
    net = Net(IDS3, leader="p", combiner="q")
    stale = next(env for s, r, env in old.pending if (s, r) == ("p", "r"))
    fresh = [it for it in net.pending if (it[0], it[1]) == ("p", "r")]
    net.pending.remove(fresh[0])
    net.pending.appendleft(("p", "r", stale))
    with pytest.raises(RemoteProtocolError, match="another session"):
        net.run()


def test_hello_checks() -> None:
    net = Net(IDS3, leader="p", combiner="q")
    item = net.take(is_msg(PartyHello, "q"))
    sender, receiver, env = item
    role = net.roles[receiver]
    nonce = env.message.nonce  # type: ignore[attr-defined]
    assert_rejected(role, sender, with_message(env, suite="psi-n/v0"), "suite")
    assert_rejected(role, sender, with_message(env, roster_digest=bytes(32)), "roster")
    other_roster = mp.roster_digest(["p", "q", "r"], "p", "r")
    assert_rejected(role, sender, with_message(env, roster_digest=other_roster), "roster")
    short = with_message(env, nonce=nonce[:8])
    assert_rejected(role, sender, Envelope(nonce[:8], 0, short.message), "nonce")
    assert_rejected(role, sender, Envelope(bytes(16), 0, env.message), "provisional")
    assert_rejected(role, sender, with_message(env, n_items=-1), "announced")
    assert_rejected(role, sender, with_message(env, n_items=MAX_ITEMS + 1), "announced")
    own = role._nonce
    echo = with_message(env, nonce=own)
    assert_rejected(role, sender, Envelope(own, 0, echo.message), "nonce")
    assert_rejected(role, sender, Envelope(env.session_id, 1, env.message), "round")
    net.deliver(item)
    assert_rejected(role, sender, env, "expected RingPoints|cannot be processed")
    # r's hello reusing p's nonce.
    r_item = net.take(is_msg(PartyHello, "q"))
    assert r_item[0] == "r"
    copied = Envelope(nonce, 0, dataclasses.replace(r_item[2].message, nonce=nonce))  # type: ignore[type-var]
    assert_rejected(role, "r", copied, "nonce")
    finish(net, r_item)


def test_positions_checked() -> None:
    net = Net(IDS3, leader="p", combiner="q")
    item = net.take(is_msg(MatchedPositions))
    sender, receiver, env = item
    role = net.roles[receiver]
    n = len(IDS3["p"])

    def u64(values: list[int]) -> bytes:
        return b"".join(v.to_bytes(8, "big") for v in values)

    good = env.message.positions  # type: ignore[attr-defined]
    assert len(good) == 24
    for blob, match in [
        (good[:-1], "whole number"),
        (u64([0, 1, 2, 3, 4, 0]), "positions for"),
        (u64([0, n]), "outside"),
        (u64([2**64 - 1]), "outside"),
        (u64([1, 1]), "strictly increasing"),
        (u64([3, 1]), "strictly increasing"),
    ]:
        assert_rejected(role, sender, with_message(env, positions=blob), match)
    finish(net, item)


def test_final_pseudonyms_checked() -> None:
    net = Net(IDS3, leader="p", combiner="q")
    for receiver in ["q", "r"]:  # the combiner also checks the count it expects
        item = net.take(is_msg(IntersectionPseudonyms, receiver))
        _, _, env = item
        role = net.roles[receiver]
        points = split(env.message.points)  # type: ignore[attr-defined]
        assert len(points) == 3
        unsorted = b"".join(points[::-1])
        for blob, match in [
            (b"".join(points)[:-1], "whole number"),
            (unsorted, "increasing"),
            (b"".join(points[:1] * 2), "increasing"),
            (b"".join(sorted([*points[:2], STRANGER])), "not one of this party's"),
            (bytes(32) + b"".join(points[1:]), "not a valid"),
            (b"".join(points) * 3, "at most"),
        ]:
            assert_rejected(role, "p", with_message(env, points=blob), match)
        if receiver == "q":
            assert_rejected(
                role,
                "p",
                with_message(env, points=b"".join(points[:2])),
                "for an intersection of 3",
            )
        net.deliver(item)
    net.run()
    assert sorted(check_rows(IDS3, net.rows())) == ["u3", "u4", "u5"]


def test_match_key_set_must_be_sorted_and_complete() -> None:
    ids = {"p": ["u1"], "q": ["u1", "u2"], "r": ["u1", "u2", "u3"]}
    net = Net(ids, leader="p", combiner="q")
    item = net.take(is_msg(MatchKeySet))
    sender, receiver, env = item
    points = split(env.message.points)  # type: ignore[attr-defined]
    role = net.roles[receiver]
    assert_rejected(role, sender, with_message(env, points=b"".join(points[::-1])), "increasing")
    assert_rejected(role, sender, with_message(env, points=b"".join(points[:2])), "expected 3")
    net.deliver(item)
    net.run()
    assert check_rows(ids, net.rows()) == ["u1"]


def synthetic(cls: type[Message], session_id: bytes, points: bytes) -> Envelope:
    fields: dict[str, Any] = {"points": points}
    if cls is PartyHello:
        fields = dict(suite=mp.SUITE, roster_digest=bytes(32), nonce=bytes(16), n_items=0)
    elif cls is RingPoints:
        fields = dict(hop=1, points=points)
    elif cls is MatchedPositions:
        fields = dict(positions=b"")
    elif cls is IntersectionCount:
        fields = dict(count=0)
    return Envelope(session_id, ROUNDS[cls], cls(**fields))


@pytest.mark.parametrize("reveal", REVEAL_MODES)
@pytest.mark.parametrize(("leader", "combiner"), [("p", "q"), ("r", "p")])
def test_every_unexpected_message_is_refused(leader: str, combiner: str, reveal: str) -> None:
    """Before each delivery, every message that the schedule or state does not allow (every
    type, from every sender, genuine ones from this session included) raises and changes
    nothing."""
    net = Net(IDS3, leader=leader, combiner=combiner, reveal=reveal)
    names = [*net.names, "mallory"]
    refusals: collections.Counter[tuple[NPartyPsiState, type]] = collections.Counter()
    pattern = "expected|cannot be processed|no further|not a peer|another session"
    while net.pending:
        seen = [env for _, _, env in net.log] + [env for _, _, env in net.pending]
        for receiver, role in net.roles.items():
            sid = role.session_id or bytes(16)
            candidates = seen + [synthetic(c, sid, STRANGER) for c in MESSAGE_TYPES]
            for sender in names:
                step = role._next_step(sender)
                for env in candidates:
                    if (
                        step is not None
                        and role.ready(sender)
                        and type(env.message) is step.cls
                        and env.round_index == step.round_index
                        and getattr(env.message, "hop", 0) == step.hop
                    ):
                        continue  # allowed here; only its content decides
                    assert_rejected(role, sender, env, pattern)
                    refusals[(role.state, type(env.message))] += 1
        net.deliver(net.pending.popleft())
    check_outputs(IDS3, {n: role.output for n, role in net.roles.items()}, reveal, leader, combiner)
    unused = {
        "both": {NPartyPsiState.WAIT_COUNT},
        "receiver": {NPartyPsiState.WAIT_COUNT, NPartyPsiState.WAIT_PSEUDONYMS},
        "cardinality": {NPartyPsiState.WAIT_PSEUDONYMS},
    }[reveal]
    assert {state for state, _ in refusals} == set(NPartyPsiState) - {NPartyPsiState.IDLE} - unused
    for role in net.roles.values():  # DONE: nothing more is accepted
        for sender in net.names:
            if sender != role.name:
                assert not role.ready(sender)


# -- API misuse -------------------------------------------------------------------------------
def test_parameter_errors() -> None:
    with pytest.raises(ParameterError, match="at least 3"):
        run_n_party({"a": ["1"], "b": ["1"]})
    with pytest.raises(ParameterError, match="leader"):
        run_n_party({"a": [], "b": [], "c": []}, leader="z")
    with pytest.raises(ParameterError, match="combiner"):
        run_n_party({"a": [], "b": [], "c": []}, combiner="z")
    with pytest.raises(ParameterError, match="different"):
        run_n_party({"a": [], "b": [], "c": []}, leader="b", combiner="b")
    with pytest.raises(ParameterError, match="mapping"):
        run_n_party([("a", [])])  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="single string"):
        run_n_party({"a": "abc", "b": [], "c": []})
    with pytest.raises(DataError, match="row 1"):
        run_n_party({"a": ["x", 1], "b": [], "c": []})  # type: ignore[list-item]
    with pytest.raises(DataError, match="UTF-8"):
        run_n_party({"a": ["\ud800"], "b": [], "c": []})
    roster = dict(parties=["a", "b", "c"], leader="a", combiner="b")
    with pytest.raises(ParameterError, match="not one of"):
        NPartyPsiParty("z", [], **roster)  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="unique"):
        NPartyPsiParty("a", [], parties=["a", "a", "b"], leader="a", combiner="b")
    with pytest.raises(ParameterError, match="non-empty"):
        NPartyPsiParty("a", [], parties=["a", "", "b"], leader="a", combiner="b")
    with pytest.raises(ParameterError, match="sequence"):
        NPartyPsiParty("a", [], parties="abc", leader="a", combiner="b")
    with pytest.raises(ParameterError, match="reveal"):
        NPartyPsiParty("a", [], reveal="leader", **roster)  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="reveal"):
        run_n_party({"a": [], "b": [], "c": []}, reveal="none")


def test_local_protocol_errors() -> None:
    role = NPartyPsiParty("a", ["x"], parties=["a", "b", "c"], leader="a", combiner="b")
    other = NPartyPsiParty("b", ["x"], parties=["a", "b", "c"], leader="a", combiner="b")
    (_, hello), _ = other.start()
    with pytest.raises(LocalProtocolError, match="start"):
        role.receive("b", hello)
    assert not role.ready("b")
    with pytest.raises(LocalProtocolError, match="result"):
        role.intersection_rows
    role.start()
    with pytest.raises(LocalProtocolError, match="start"):
        role.start()
    assert role.ready("b") and not role.ready("a") and not role.ready("zed")
    assert role.n_items == 1 and role.name == "a" and role.role is NPartyRole.LEADER


def test_registry_rejects_garbage() -> None:
    rng = random.Random(0)
    for size in [0, 5, 27, 40, 100]:
        with pytest.raises(RemoteProtocolError):
            N_PARTY_REGISTRY.decode(bytes(rng.randrange(256) for _ in range(size)))
    frame = N_PARTY_REGISTRY.encode(RingPoints(2, b"abc"), session_id=bytes(16), round_index=1)
    assert N_PARTY_REGISTRY.decode(frame).message == RingPoints(2, b"abc")
    with pytest.raises(RemoteProtocolError, match="trailing"):
        N_PARTY_REGISTRY.decode(frame + b"\x00")
    assert {cls.TYPE_ID for cls in N_PARTY_REGISTRY.types()} == set(range(140, 149))


def test_too_many_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mp, "MAX_ITEMS", 2)
    with pytest.raises(ParameterError, match="at most 2"):
        NPartyPsiParty("a", ["1", "2", "3"], parties=["a", "b", "c"], leader="a", combiner="b")
    assert (
        NPartyPsiParty(
            "a", ["1", "2", "2"], parties=["a", "b", "c"], leader="a", combiner="b"
        ).n_items
        == 2
    )
