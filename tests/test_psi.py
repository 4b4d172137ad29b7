"""Tests for the ``psi`` package: correctness, common order, transcripts, malformed input."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import pickle
from collections.abc import Callable, Sequence

import nacl.bindings
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import psi
from protocols.errors import (
    DataError,
    LocalProtocolError,
    ParameterError,
    RemoteProtocolError,
)
from protocols.wire import Envelope, Message
from psi import (
    REGISTRY,
    DoubleBlindedInitiatorPoints,
    DoubleBlindedResponderPoints,
    InitiatorBlindedPoints,
    InitiatorHello,
    IntersectionPositions,
    PsiInitiator,
    PsiResponder,
    PsiState,
    ResponderBlindedPoints,
    ResponderHello,
    _ecdh,
)
from psi._engine import PsiEngine
from psi._messages import IntersectionCardinality
from psi._roles import REVEAL_MODES, PsiOutput, session_context

# Points of small order (u-coordinates, little-endian): 0, 1, the two order-8 points listed in
# libsodium's x25519_ref10.c (has_small_order), and p - 1 (order 2). Each makes X25519's output
# all zeros, which libsodium refuses.
LOW_ORDER_POINTS = [
    bytes(32),
    (1).to_bytes(32, "little"),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    (2**255 - 20).to_bytes(32, "little"),
]


# -- helpers ----------------------------------------------------------------------------------
def wire(env: Envelope) -> Envelope:
    """Encode and decode, as a real transport would."""
    frame = REGISTRY.encode(env.message, session_id=env.session_id, round_index=env.round_index)
    return REGISTRY.decode(frame)


def feed(role: PsiInitiator | PsiResponder, envs: Sequence[Envelope]) -> list[Envelope]:
    return [out for env in envs for out in role.receive(wire(env))]


class Run:
    """A two-party run driven step by step, keeping every message."""

    def __init__(
        self,
        ids_a: Sequence[str],
        ids_b: Sequence[str],
        chunk_points: int = 4,
        follow: bool = False,
        reveal: str = "both",
        hash_to_curve: str = "sha256",
        engine: PsiEngine | None = None,
        fixed: bool = False,
    ) -> None:
        self.a = PsiInitiator(
            ids_a,
            chunk_points=chunk_points,
            positions_follow=follow,
            reveal=reveal,
            hash_to_curve=hash_to_curve,
            engine=engine,
        )
        self.b = PsiResponder(ids_b, reveal=reveal, hash_to_curve=hash_to_curve, engine=engine)
        if fixed:  # known-answer runs: fixed secrets and nonces
            self.a._scalar, self.a._nonce = SCALAR_A, NONCE_A
            self.b._scalar, self.b._nonce = SCALAR_B, NONCE_B
        self.hello = self.a.start()
        self.rhello = feed(self.b, self.hello)
        self.blinded: list[Envelope] = []
        self.reply: list[Envelope] = []
        self.final: list[Envelope] = []

    def step_hello(self) -> Run:
        self.blinded = feed(self.a, self.rhello)
        return self

    def step_blinded(self) -> Run:
        self.reply = feed(self.b, self.blinded)
        return self

    def step_reply(self) -> Run:
        self.final = feed(self.a, self.reply)
        return self

    def step_final(self) -> Run:
        assert feed(self.b, self.final) == []
        return self

    def of_type(self, envs: list[Envelope], cls: type[Message]) -> list[Envelope]:
        return [e for e in envs if isinstance(e.message, cls)]

    def complete(self) -> Run:
        return self.step_hello().step_blinded().step_reply().step_final()


def replace(env: Envelope, **changes: object) -> Envelope:
    """Envelope with a rebuilt message (fields in ``changes`` replaced)."""
    message = dataclasses.replace(env.message, **changes)  # type: ignore[type-var]
    return Envelope(env.session_id, env.round_index, message)


SCALAR_A = bytes(range(32))
SCALAR_B = bytes(range(100, 132))
NONCE_A = bytes(range(16))
NONCE_B = bytes(range(16, 32))


def check_pair(
    ids_a: Sequence[str], ids_b: Sequence[str], rows_a: Sequence[int], rows_b: Sequence[int]
) -> None:
    rows_a, rows_b = list(rows_a), list(rows_b)
    first_a = {x: i for i, x in reversed(list(enumerate(ids_a)))}
    first_b = {x: i for i, x in reversed(list(enumerate(ids_b)))}
    common = set(ids_a) & set(ids_b)
    assert len(rows_a) == len(rows_b) == len(common)
    assert [ids_a[r] for r in rows_a] == [ids_b[r] for r in rows_b]  # same order
    assert {ids_a[r] for r in rows_a} == common
    assert all(first_a[ids_a[r]] == r for r in rows_a)  # duplicates: first row counts
    assert all(first_b[ids_b[r]] == r for r in rows_b)


# -- X25519 known answers -----------------------------------------------------------------------
def test_x25519_rfc7748_vector() -> None:
    # RFC 7748, section 5.2, first test vector.
    scalar = bytes.fromhex("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4")
    u = bytes.fromhex("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c")
    out = bytes.fromhex("c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552")
    assert nacl.bindings.crypto_scalarmult(scalar, u) == out


@pytest.mark.parametrize("point_source", ["base", "hashed-id", "twist-or-curve"])
def test_x25519_commutes_for_fixed_scalars(point_source: str) -> None:
    a = bytes(range(32))
    b = bytes(range(100, 132))
    if point_source == "base":
        point = (9).to_bytes(32, "little")
    elif point_source == "hashed-id":
        point = _ecdh.hash_to_points(["alice@example.com"], bytes(32))[0]
    else:  # u = 2 is on the twist (u^3 + A u^2 + u is a non-square mod p); still commutes.
        point = (2).to_bytes(32, "little")
    mult = nacl.bindings.crypto_scalarmult
    ab = mult(a, mult(b, point))
    assert ab == mult(b, mult(a, point))
    assert ab != point and len(ab) == 32


def test_hash_to_point_depends_on_salt_and_clears_top_bit() -> None:
    ids = [f"user-{i}" for i in range(200)]
    p1 = _ecdh.hash_to_points(ids, bytes(32))
    p2 = _ecdh.hash_to_points(ids, b"\x01" * 32)
    assert not set(p1) & set(p2)
    assert all(p[31] < 0x80 for p in p1)
    expected = hashlib.sha256(_ecdh.HASH_TAG + bytes(32) + b"user-0").digest()
    assert p1[0] == expected[:31] + bytes((expected[31] & 0x7F,))


# -- correctness ----------------------------------------------------------------------------
ID_POOL = [
    "a",
    "b",
    "c",
    "",
    "Zoë",
    "名前",
    "🙂🙃",
    "x" * 1000,
    "x" * 1001,
    "long" * 25_000,
    "id\x00nul",
    "12",
    "012",
] + [f"user-{i}" for i in range(20)]
ids_strategy = st.lists(st.sampled_from(ID_POOL) | st.text(max_size=30), max_size=30)


@settings(max_examples=60, deadline=None)
@given(ids_a=ids_strategy, ids_b=ids_strategy, chunk_points=st.integers(1, 8))
def test_two_party_equals_set_intersection(
    ids_a: list[str], ids_b: list[str], chunk_points: int
) -> None:
    result = psi.run_two_party(ids_a, ids_b, chunk_points=chunk_points)
    assert result.rows_a is not None and result.rows_b is not None
    check_pair(ids_a, ids_b, result.rows_a, result.rows_b)


@pytest.mark.parametrize(
    ("ids_a", "ids_b"),
    [([], []), (["x"], []), ([], ["x"]), (["x", "x"], ["y"]), (["x", "x", "y"], ["y", "y", "x"])],
)
def test_two_party_edge_cases(ids_a: list[str], ids_b: list[str]) -> None:
    result = psi.run_two_party(ids_a, ids_b, chunk_points=2)
    assert result.rows_a is not None and result.rows_b is not None
    check_pair(ids_a, ids_b, result.rows_a, result.rows_b)
    assert [e.message_type for e in result.transport.transcript][:2] == [
        "InitiatorHello",
        "ResponderHello",
    ]


def test_two_party_larger_sets_and_chunking() -> None:
    ids_a = [f"customer-{i}" for i in range(600)]
    ids_b = [f"customer-{i}" for i in range(300, 1000, 2)][::-1]
    result = psi.run_two_party(ids_a, ids_b, chunk_points=128)
    assert result.rows_a is not None and result.rows_b is not None
    check_pair(ids_a, ids_b, result.rows_a, result.rows_b)
    counts: dict[str, int] = {}
    for entry in result.transport.transcript:
        counts[entry.message_type] = counts.get(entry.message_type, 0) + 1
    assert counts == {
        "InitiatorHello": 1,
        "ResponderHello": 1,
        "InitiatorBlindedPoints": 5,  # ceil(600 / 128)
        "DoubleBlindedInitiatorPoints": 5,
        "ResponderBlindedPoints": 3,  # ceil(350 / 128)
        "DoubleBlindedResponderPoints": 3,
    }


def test_fresh_randomness_per_session() -> None:
    ids = [f"user-{i}" for i in range(10)]
    blobs = []
    for _ in range(2):
        run = Run(ids, ids).step_hello()
        blobs.append(run.blinded[0].message.points)  # type: ignore[attr-defined]
        assert run.a.session_id is not None and run.a.session_id == run.b.session_id
    assert blobs[0] != blobs[1]


def test_roles_run_without_the_driver() -> None:
    run = Run(["p", "q", "r"], ["r", "s", "p"], chunk_points=1).complete()
    assert run.a.state is run.b.state is PsiState.DONE
    check_pair(["p", "q", "r"], ["r", "s", "p"], run.a.intersection_rows, run.b.intersection_rows)


@settings(max_examples=25, deadline=None)
@given(
    sets=st.lists(st.lists(st.sampled_from(ID_POOL), max_size=25), min_size=3, max_size=4),
    leader_index=st.integers(0, 3),
)
def test_multi_party_equals_set_intersection(sets: list[list[str]], leader_index: int) -> None:
    ids = {f"party{k}": s for k, s in enumerate(sets)}
    leader = f"party{leader_index % len(sets)}"
    result = psi.run_multi_party(ids, leader=leader, chunk_points=7)
    common = set.intersection(*map(set, sets))
    rows = result.rows
    aligned = [[ids[name][r] for r in rows[name]] for name in ids]
    assert all(a == aligned[0] for a in aligned)
    assert set(aligned[0]) == common and len(aligned[0]) == len(common)
    # Only the leader talks, and only the leader sends positions.
    for entry in result.transport.transcript:
        assert leader in (entry.sender, entry.receiver)
        if entry.message_type == "IntersectionPositions":
            assert entry.sender == leader and entry.round_index == 4


def test_align_three_parties_rows_line_up() -> None:
    rng = np.random.default_rng(0)
    universe = [f"cust-{i:04d}" for i in range(300)]
    frames = {}
    for name, size in [("bank", 200), ("shop", 150), ("telco", 180)]:
        chosen = list(rng.choice(universe, size=size, replace=False))
        frames[name] = pd.DataFrame(
            {"id": chosen, f"{name}_feature": [int(x[5:]) * 10 for x in chosen]},
            index=rng.permutation(size) + 1000,
        )
    originals = {name: frame.copy() for name, frame in frames.items()}
    out = psi.align(frames, leader="shop")
    common = set.intersection(*(set(f["id"]) for f in frames.values()))
    assert list(out) == ["bank", "shop", "telco"]
    for name, frame in out.items():
        assert list(frame["id"]) == list(out["bank"]["id"])
        assert set(frame["id"]) == common and len(frame) == len(common)
        assert frame.index.equals(pd.RangeIndex(len(common)))
        assert list(frame[f"{name}_feature"]) == [int(x[5:]) * 10 for x in frame["id"]]
        pd.testing.assert_frame_equal(frames[name], originals[name])  # inputs untouched


def test_align_two_parties_and_str_conversion() -> None:
    a = pd.DataFrame({"key": [3, 1, 2], "v": [30, 10, 20]})
    b = pd.DataFrame({"key": ["2", "3", "9"], "w": [0.2, 0.3, 0.9]})
    out = psi.align({"a": a, "b": b}, id_column="key")
    assert [str(x) for x in out["a"]["key"]] == list(out["b"]["key"])
    assert sorted(out["b"]["key"]) == ["2", "3"]
    assert list(out["a"]["v"]) == [int(k) * 10 for k in out["a"]["key"]]


# -- transcript -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("reveal", "h2c"), [(m, "sha256") for m in REVEAL_MODES] + [("both", "elligator2")]
)
def test_transcript_has_no_ids_or_hashes_of_ids(reveal: str, h2c: str) -> None:
    ids_a = [f"alice.customer.{i:05d}@example.com" for i in range(40)]
    ids_b = [f"alice.customer.{i:05d}@example.com" for i in range(20, 60)]
    result = psi.run_two_party(
        ids_a, ids_b, chunk_points=16, keep_payloads=True, reveal=reveal, hash_to_curve=h2c
    )
    transport = result.transport
    if reveal == "both":
        assert result.rows_a is not None and result.rows_b is not None
        check_pair(ids_a, ids_b, result.rows_a, result.rows_b)
    frames = [entry.payload for entry in transport.transcript]
    assert all(f is not None for f in frames)
    hello_a = REGISTRY.decode(frames[0]).message  # type: ignore[arg-type]
    hello_b = REGISTRY.decode(frames[1]).message  # type: ignore[arg-type]
    assert isinstance(hello_a, InitiatorHello) and isinstance(hello_b, ResponderHello)
    context = session_context(_ecdh.SUITES[h2c], reveal, 16, False)
    _, salt = _ecdh.derive_session(hello_a.nonce, hello_b.nonce, context)
    forbidden = []
    for item in set(ids_a) | set(ids_b):
        raw = item.encode()
        forbidden += [
            raw,
            raw[:12],
            hashlib.sha256(raw).digest(),
            hashlib.sha256(salt + raw).digest(),
            hashlib.sha256(_ecdh.HASH_TAG + salt + raw).digest(),
            _ecdh.hash_to_points([item], salt)[0],
            _ecdh.hash_to_points([item], salt, h2c)[0],
        ]
    for frame in frames:
        assert frame is not None
        for needle in forbidden:
            assert needle not in frame
    assert [(e.sender, e.round_index) for e in transport.transcript][:3] == [
        ("a", 0),
        ("b", 0),
        ("a", 1),
    ]


# -- malformed and unexpected peer messages ---------------------------------------------------
def assert_rejected(
    role: PsiInitiator | PsiResponder, env: Envelope, match: str | None = None
) -> None:
    state, next_chunk, result = role.state, role._next_chunk, role.result
    n_own, n_peer = len(role._own_keys), len(role._peer_keys)
    with pytest.raises(RemoteProtocolError, match=match):
        role.receive(env)
    assert role.state is state and role._next_chunk == next_chunk
    assert role.result is result  # no partial output
    assert (len(role._own_keys), len(role._peer_keys)) == (n_own, n_peer)


A_IDS = ["p", "q", "r", "s", "t", "u"]
B_IDS = ["u", "t", "v", "p", "w"]


def finish_and_check(run: Run) -> None:
    """After rejected messages, the genuine ones still complete the protocol correctly."""
    if not run.blinded:
        run.step_hello()
    if not run.reply:
        run.step_blinded()
    if not run.final:
        run.step_reply()
    run.step_final()
    check_pair(A_IDS, B_IDS, run.a.intersection_rows, run.b.intersection_rows)


def test_responder_rejects_bad_initiator_points() -> None:
    run = Run(A_IDS, B_IDS, chunk_points=4).step_hello()
    good = run.blinded[0]
    points = good.message.points  # type: ignore[attr-defined]
    assert_rejected(run.b, replace(good, points=points[:-1]), "expected 4 points")
    assert_rejected(run.b, replace(good, points=points + bytes(32)), "expected 4 points")
    for low in LOW_ORDER_POINTS:
        assert_rejected(run.b, replace(good, points=points[:32] + low + points[64:]), "small order")
    top_bit = points[:31] + bytes((points[31] | 0x80,)) + points[32:]
    assert_rejected(run.b, replace(good, points=top_bit), "non-canonical")
    u_eq_p = (2**255 - 19).to_bytes(32, "little")
    assert_rejected(run.b, replace(good, points=u_eq_p + points[32:]), "non-canonical")
    assert_rejected(run.b, replace(good, points=points[:32] * 4), "repeated")
    assert_rejected(run.b, replace(good, chunk_index=1), "expected chunk 0")
    assert_rejected(run.b, Envelope(bytes(16), good.round_index, good.message), "another session")
    assert_rejected(run.b, Envelope(good.session_id, 2, good.message), "expected round 1")
    assert_rejected(run.b, run.hello[0], "expected InitiatorBlindedPoints")
    # Second chunk is 2 points: its size is checked against the announced count too.
    assert_rejected(run.b, replace(run.blinded[1], chunk_index=0), "expected 4 points")
    finish_and_check(run)


def test_initiator_rejects_bad_responder_messages() -> None:
    run = Run(A_IDS, B_IDS, chunk_points=4).step_hello().step_blinded()
    dbi = [e for e in run.reply if isinstance(e.message, DoubleBlindedInitiatorPoints)]
    rbp = [e for e in run.reply if isinstance(e.message, ResponderBlindedPoints)]
    assert len(dbi) == 2 and len(rbp) == 2
    points = dbi[0].message.points  # type: ignore[attr-defined]
    assert_rejected(run.a, replace(dbi[0], points=points[:-32]), "expected 4 points")
    assert_rejected(run.a, replace(dbi[0], points=points[:32] * 4), "repeated")
    assert_rejected(run.a, rbp[0], "expected DoubleBlindedInitiatorPoints")
    assert_rejected(run.a, dbi[1], "expected chunk 0")
    for env in dbi:
        assert run.a.receive(wire(env)) == []
    assert run.a.state is PsiState.WAIT_RESPONDER_POINTS
    points = rbp[0].message.points  # type: ignore[attr-defined]
    for low in LOW_ORDER_POINTS:
        assert_rejected(run.a, replace(rbp[0], points=low + points[32:]), "small order")
    assert_rejected(run.a, replace(rbp[0], points=points + b"\x00"), "expected 4 points")
    assert_rejected(run.a, Envelope(b"\xff" * 16, 2, rbp[0].message), "another session")
    run.final = feed(run.a, rbp)
    run.reply = rbp  # consumed above
    finish_and_check(run)


def test_responder_rejects_bad_final_points() -> None:
    run = Run(A_IDS, B_IDS, chunk_points=4).step_hello().step_blinded().step_reply()
    good = run.final[0]
    points = good.message.points  # type: ignore[attr-defined]
    assert_rejected(run.b, replace(good, points=points[:40]), "expected 4 points")
    assert_rejected(run.b, replace(good, points=points[:32] * 4), "repeated")
    assert_rejected(run.b, Envelope(good.session_id, 2, good.message), "expected round 3")
    finish_and_check(run)


def test_hello_checks() -> None:
    run = Run(A_IDS, B_IDS)
    fresh = PsiResponder(B_IDS)
    hello = run.hello[0]
    assert_rejected(fresh, replace(hello, suite="ecdh-p256/v0"), "suite")
    assert_rejected(fresh, replace(hello, nonce=b"short"), "nonce")
    assert_rejected(fresh, replace(hello, n_items=-1), "items")
    assert_rejected(fresh, replace(hello, chunk_points=0), "chunk_points")
    assert_rejected(fresh, Envelope(bytes(16), 0, hello.message), "provisional")
    assert_rejected(fresh, Envelope(hello.session_id, 1, hello.message), "expected round 0")
    rhello = run.rhello[0]
    assert_rejected(run.a, Envelope(bytes(16), 0, rhello.message), "another session")
    assert_rejected(run.a, replace(rhello, suite="other"), "suite")
    echo = hello.message.nonce  # type: ignore[attr-defined]
    assert_rejected(run.a, replace(rhello, nonce=echo), "echoed")
    finish_and_check(run)


def test_truncated_and_garbage_frames_are_rejected_by_the_decoder() -> None:
    run = Run(A_IDS, B_IDS).step_hello()
    env = run.blinded[0]
    frame = REGISTRY.encode(env.message, session_id=env.session_id, round_index=env.round_index)
    for bad in [frame[:-1], frame[:10], frame + b"\x00", b"", b"VF" + bytes(40)]:
        with pytest.raises(RemoteProtocolError):
            REGISTRY.decode(bad)


def test_positions_checks() -> None:
    run = Run(A_IDS, B_IDS, follow=True).complete()
    assert run.a.state is PsiState.SEND_POSITIONS and run.b.state is PsiState.WAIT_POSITIONS
    n = len(run.a.pairwise_rows)
    assert n == 3 and run.a.pairwise_rows and run.b.pairwise_rows
    with pytest.raises(LocalProtocolError):
        _ = run.b.intersection_rows
    with pytest.raises(ParameterError):
        run.a.send_positions([0, 0])
    with pytest.raises(ParameterError):
        run.a.send_positions([n])
    assert run.a.state is PsiState.SEND_POSITIONS
    (env,) = run.a.send_positions([2, 0])
    assert run.a.intersection_rows == [run.a.pairwise_rows[2], run.a.pairwise_rows[0]]

    def pos(values: list[int]) -> Envelope:
        return replace(env, positions=np.asarray(values, dtype=">u8").tobytes())

    assert_rejected(run.b, replace(env, positions=b"\x00" * 7), "u64")
    assert_rejected(run.b, pos([0, 3]), "outside")
    assert_rejected(run.b, pos([1, 1]), "repeated")
    assert_rejected(run.b, pos([0, 1, 2, 0]), "positions for a pairwise result of 3")
    assert run.b.receive(wire(env)) == []
    assert run.b.state is PsiState.DONE
    ids_a = [A_IDS[r] for r in run.a.intersection_rows]
    assert ids_a == [B_IDS[r] for r in run.b.intersection_rows] and len(ids_a) == 2


def sample_envelopes(session_id: bytes) -> list[Envelope]:
    """One well-formed-looking envelope per message type, at its usual round."""
    nonce = bytes(16)
    messages: list[tuple[Message, int]] = [
        (InitiatorHello(_ecdh.SUITE, "both", nonce, 1, 4, False), 0),
        (ResponderHello(_ecdh.SUITE, b"\x01" * 16, 1), 0),
        (InitiatorBlindedPoints(0, b""), 1),
        (DoubleBlindedInitiatorPoints(0, b""), 2),
        (ResponderBlindedPoints(0, b""), 2),
        (DoubleBlindedResponderPoints(0, b""), 3),
        (IntersectionPositions(b""), 4),
        (IntersectionCardinality(0), 3),
    ]
    return [Envelope(session_id, r, m) for m, r in messages]


def test_every_unexpected_message_type_is_rejected_in_every_state() -> None:
    """Exhaustive (state, message type) table for both roles."""

    def only_double_blinded(run: Run) -> Run:
        # Leaves the initiator between its two inbound message kinds.
        feed(run.a, [e for e in run.reply if isinstance(e.message, DoubleBlindedInitiatorPoints)])
        return run

    stages: list[Callable[[Run], Run]] = [
        lambda r: r,
        Run.step_hello,
        Run.step_blinded,
        Run.step_reply,
        Run.step_final,
    ]
    partial = [stages[0], Run.step_hello, Run.step_blinded, only_double_blinded]
    allowed = {
        PsiState.WAIT_RESPONDER_HELLO: ResponderHello,
        PsiState.WAIT_DOUBLE_BLINDED_INITIATOR_POINTS: DoubleBlindedInitiatorPoints,
        PsiState.WAIT_RESPONDER_POINTS: ResponderBlindedPoints,
        PsiState.WAIT_INITIATOR_HELLO: InitiatorHello,
        PsiState.WAIT_INITIATOR_POINTS: InitiatorBlindedPoints,
        PsiState.WAIT_DOUBLE_BLINDED_RESPONDER_POINTS: DoubleBlindedResponderPoints,
        PsiState.WAIT_POSITIONS: IntersectionPositions,
        PsiState.WAIT_CARDINALITY: IntersectionCardinality,
    }
    seen_states = set()
    paths = [stages[: depth + 1] for depth in range(len(stages))] + [partial]
    configs = [(False, "both"), (True, "both"), (False, "receiver"), (False, "cardinality")]
    for follow, reveal in configs:
        for path in paths:
            run = Run(A_IDS, B_IDS, chunk_points=4, follow=follow, reveal=reveal)
            fresh_responder = PsiResponder(B_IDS, reveal=reveal)
            for stage in path:
                stage(run)
            for role in (run.a, run.b, fresh_responder):
                seen_states.add(role.state)
                session = role.session_id or bytes(16)
                for env in sample_envelopes(session):
                    if allowed.get(role.state) is type(env.message):
                        continue
                    assert_rejected(role, env)
    assert seen_states >= set(allowed) | {PsiState.DONE, PsiState.SEND_POSITIONS}


def test_local_protocol_errors() -> None:
    a = PsiInitiator(A_IDS)
    with pytest.raises(LocalProtocolError):
        a.receive(sample_envelopes(bytes(16))[1])
    with pytest.raises(LocalProtocolError):
        a.send_positions([])
    with pytest.raises(LocalProtocolError):
        _ = a.intersection_rows
    with pytest.raises(LocalProtocolError):
        _ = a.pairwise_rows
    a.start()
    with pytest.raises(LocalProtocolError):
        a.start()
    with pytest.raises(TypeError):
        pickle.dumps(a)
    with pytest.raises(TypeError):
        copy.deepcopy(PsiResponder(B_IDS))


def test_role_parameter_errors() -> None:
    with pytest.raises(ParameterError):
        PsiInitiator(A_IDS, chunk_points=0)
    with pytest.raises(ParameterError):
        PsiResponder("abc")
    with pytest.raises(DataError, match="row 1"):
        PsiInitiator(["a", 2, "c"])  # type: ignore[list-item]
    with pytest.raises(ParameterError):
        psi.run_multi_party({"only": ["a"]})
    with pytest.raises(ParameterError):
        psi.run_multi_party({"a": ["x"], "b": ["x"]}, leader="c")
    with pytest.raises(ParameterError):
        psi.run_two_party(["x"], ["x"], names=("a", "a"))


# -- known answers with fixed secrets ----------------------------------------------------------
# Computed independently of psi/ with hashlib and nacl.bindings.crypto_scalarmult (script in the
# PR notes): nonces bytes(0..15) and bytes(16..31), scalars bytes(0..31) and bytes(100..131),
# session context "ecdh-x25519-sha256-u/v1|both|4|0". Entries: H(x), H(x)^a, H(x)^ab.
KAT_SESSION_ID = "71f96ebff9dd09f099a08601c07fc8ca"
KAT_SALT = "13362aa8bfa6a8b2ac7473aaed90b26be706a8ecebe9a7b265999a8daa8df83e"
KAT = {
    "alice@example.com": (
        "9bd9bc332ef0b46f4a6a2bb55caf5af61237c17a25d7e4df8c4e3867967beb5c",
        "669eca0ef1a9cd0aa0b26a681194d7c46a323beb3f3b0a5e5b3b627ad0597d3e",
        "0e5b3e57ff40aa2a61c12aa5f7f8421bae4f57e5bbb3dd7f456a2e3ea00fe61a",
    ),
    "carol@example.com": (
        "f63490517fd910919fc48356119229e1fee94868942847b60bc5d050d79abb77",
        "36952f40e5e0d3d809f35b8d1e07c832d68148820988d5199c657fdfe8bb6f0b",
        "7d3bb1c2c4c178c83b18ee1ef61815d4dc68ff7a974804fc15b4931edbefd342",
    ),
}
# Elligator 2 option, same nonces, context "ecdh-x25519-ell2-ed25519-sha512/v1|both|4|0":
# salt, then crypto_core_ed25519_from_uniform(SHA-512(tag || salt || "alice@example.com")[:32])
# and its u-coordinate from crypto_sign_ed25519_pk_to_curve25519.
KAT_ELL2_SALT = "8d368a6a399098de7b1333b096770a1ff51bf932ee9e66948ec10d5a156305b2"
KAT_ELL2_ALICE_U = "7276eb8be5e8338cb9a4da5fa0c394d6db2b4e7150b61a06507527cdb1c1b208"


def split_points(blob: bytes) -> list[bytes]:
    return [blob[i : i + 32] for i in range(0, len(blob), 32)]


def all_points(envs: Sequence[Envelope], cls: type[Message]) -> bytes:
    return b"".join(e.message.points for e in envs if isinstance(e.message, cls))  # type: ignore[attr-defined]


def test_known_answers_with_fixed_scalars() -> None:
    ids_a = ["alice@example.com", "bob@example.com", "carol@example.com"]
    ids_b = ["carol@example.com", "dave@example.com", "alice@example.com"]
    run = Run(ids_a, ids_b, chunk_points=4, fixed=True).step_hello()
    assert run.a.session_id == bytes.fromhex(KAT_SESSION_ID) == run.b.session_id
    assert run.a._salt == bytes.fromhex(KAT_SALT)
    for item, (h, _, _) in KAT.items():
        assert _ecdh.hash_to_points([item], bytes.fromhex(KAT_SALT))[0].hex() == h
    sent = split_points(all_points(run.blinded, InitiatorBlindedPoints))
    assert {KAT[x][1] for x in KAT} <= {p.hex() for p in sent}
    run.step_blinded()
    returned = split_points(all_points(run.reply, DoubleBlindedInitiatorPoints))
    assert {KAT[x][2] for x in KAT} <= {p.hex() for p in returned}
    run.step_reply().step_final()
    # Common order = order of H(x)^ab: alice (0e5b...) before carol (7d3b...).
    assert run.a.intersection_rows == [0, 2] and run.b.intersection_rows == [2, 0]


def test_elligator2_known_answer_and_birational_map() -> None:
    context = session_context(_ecdh.SUITES["elligator2"], "both", 4, False)
    _, salt = _ecdh.derive_session(NONCE_A, NONCE_B, context)
    assert salt.hex() == KAT_ELL2_SALT
    point = _ecdh.hash_to_points(["alice@example.com"], salt, "elligator2")[0]
    assert point.hex() == KAT_ELL2_ALICE_U
    run = Run(["alice@example.com"], ["x"], fixed=True, hash_to_curve="elligator2").step_hello()
    assert run.a._salt == salt
    # Independent check of u = (1 + y) / (1 - y) against libsodium on many IDs.
    ids = [f"user-{i}" for i in range(64)] + ["", "名前"]
    ours = _ecdh.hash_to_points(ids, salt, "elligator2")
    for item, u in zip(ids, ours):
        digest = hashlib.sha512(_ecdh.ELL2_HASH_TAG + salt + item.encode()).digest()
        edwards = nacl.bindings.crypto_core_ed25519_from_uniform(digest[:32])
        assert nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(edwards) == u
    assert len(set(ours)) == len(ours)
    assert set(ours).isdisjoint(_ecdh.hash_to_points(ids, salt))


# -- reveal modes, engines ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def pool_engine():
    # Tiny tasks so that even small sets go through the worker processes.
    with PsiEngine(n_jobs=2, task_points=3) as engine:
        yield engine


def check_mode(result: psi.TwoPartyPsiResult, ids_a: list[str], ids_b: list[str]) -> None:
    common = set(ids_a) & set(ids_b)
    a, b = result.a, result.b
    assert isinstance(a, PsiOutput) and isinstance(b, PsiOutput)
    assert (a.n_items, a.peer_n_items) == (len(set(ids_a)), len(set(ids_b)))
    assert (b.n_items, b.peer_n_items) == (len(set(ids_b)), len(set(ids_a)))
    assert a.cardinality == len(common)
    if result.reveal == "both":
        assert a.rows is not None and b.rows is not None and b.cardinality == len(common)
        check_pair(ids_a, ids_b, a.rows.tolist(), b.rows.tolist())
    elif result.reveal == "receiver":
        assert a.rows is not None and b.rows is None and b.cardinality is None
        assert {ids_a[r] for r in a.rows} == common and len(a.rows) == len(common)
        # Rows are first occurrences and sorted by the (secret) double-blinded values.
        assert all(ids_a.index(ids_a[r]) == r for r in a.rows)
    else:
        assert a.rows is None and b.rows is None and b.cardinality == len(common)


@settings(max_examples=50, deadline=None)
@given(
    ids_a=ids_strategy,
    ids_b=ids_strategy,
    reveal=st.sampled_from(REVEAL_MODES),
    h2c=st.sampled_from(_ecdh.HASH_TO_CURVE),
    chunk_points=st.integers(1, 8),
    use_pool=st.booleans(),
)
def test_every_mode_equals_set_intersection(
    pool_engine: PsiEngine,
    ids_a: list[str],
    ids_b: list[str],
    reveal: str,
    h2c: str,
    chunk_points: int,
    use_pool: bool,
) -> None:
    result = psi.run_two_party(
        ids_a,
        ids_b,
        reveal=reveal,
        hash_to_curve=h2c,
        chunk_points=chunk_points,
        engine=pool_engine if use_pool else None,
        n_jobs=1,
    )
    assert result.reveal == reveal
    check_mode(result, ids_a, ids_b)


@pytest.mark.parametrize("h2c", _ecdh.HASH_TO_CURVE)
def test_pool_and_in_process_engines_agree(pool_engine: PsiEngine, h2c: str) -> None:
    ids = [f"user-{i}" for i in range(40)] + ["Zoë", "x" * 5000, ""]
    blob, offsets = _ecdh.encode_ids(ids)
    local = PsiEngine(n_jobs=1, task_points=7)
    salt = bytes(range(32))
    hashed = local.hash_and_multiply(h2c, salt, SCALAR_A, blob, offsets)
    assert hashed == pool_engine.hash_and_multiply(h2c, salt, SCALAR_A, blob, offsets)
    assert local.multiply(SCALAR_B, hashed) == pool_engine.multiply(SCALAR_B, hashed)
    assert split_points(local.multiply(SCALAR_B, hashed)) == _ecdh.blind(
        SCALAR_B, split_points(hashed)
    )
    # Whole protocol with fixed secrets: identical results whatever the engine.
    ids_a, ids_b = ids[:30], ids[10:] + ["other"]
    results = []
    for engine in (None, local, pool_engine):
        run = Run(ids_a, ids_b, fixed=True, hash_to_curve=h2c, engine=engine).complete()
        results.append((run.a.intersection_rows, run.b.intersection_rows))
    assert results[0] == results[1] == results[2]
    check_pair(ids_a, ids_b, *results[0])


def test_engine_rejects_low_order_points_in_any_task(pool_engine: PsiEngine) -> None:
    good = _ecdh.hash_to_points([f"u{i}" for i in range(10)], bytes(32))
    for engine in (PsiEngine(n_jobs=1, task_points=3), pool_engine):
        for low in LOW_ORDER_POINTS:
            with pytest.raises(_ecdh.LowOrderPointError):
                engine.multiply(SCALAR_A, b"".join(good[:7] + [low] + good[7:]))
    assert len(pool_engine.multiply(SCALAR_A, b"".join(good))) == 320  # pool still usable


def test_engine_lifecycle_and_parameters() -> None:
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ParameterError):
            PsiEngine(n_jobs=bad)  # type: ignore[arg-type]
        with pytest.raises(ParameterError):
            PsiEngine(n_jobs=1, task_points=bad)  # type: ignore[arg-type]
    engine = PsiEngine(n_jobs=2, task_points=2)
    assert engine.n_jobs == 2 and engine.task_points == 2
    with engine:
        first = psi.run_two_party(["a", "b", "c"], ["c", "b"], engine=engine)
        second = psi.run_two_party(["x", "y"], ["y"], engine=engine, reveal="cardinality")
    assert first.a.cardinality == 2 and second.b.cardinality == 1
    engine.close()  # idempotent
    with pytest.raises(ParameterError, match="closed"):
        engine.multiply(SCALAR_A, bytes(32))
    with pytest.raises(TypeError):
        pickle.dumps(PsiEngine(n_jobs=1))
    assert PsiEngine().n_jobs >= 1


def test_progress_callback_counts_every_multiplication(pool_engine: PsiEngine) -> None:
    calls: list[tuple[int, int]] = []
    ids_a = [f"p{i}" for i in range(20)] + ["p0"]
    ids_b = [f"p{i}" for i in range(10, 25)]
    psi.run_two_party(ids_a, ids_b, engine=pool_engine, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (2 * (20 + 15), 2 * (20 + 15))
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert pool_engine.on_progress is None  # restored


def test_receiver_mode_responder_learns_only_sizes() -> None:
    ids_a = [f"user-{i}" for i in range(12)]
    ids_b = [f"user-{i}" for i in range(6, 20)]
    result = psi.run_two_party(ids_a, ids_b, reveal="receiver", chunk_points=5)
    check_mode(result, ids_a, ids_b)
    transcript = result.transport.transcript
    from_a = [(e.message_type, e.round_index) for e in transcript if e.sender == "a"]
    assert from_a == [("InitiatorHello", 0)] + [("InitiatorBlindedPoints", 1)] * 3
    b = result.b
    assert (b.reveal, b.rows, b.cardinality, b.n_items, b.peer_n_items) == (
        "receiver",
        None,
        None,
        14,
        12,
    )
    assert result.a.rows is not None and not result.a.rows.flags.writeable
    with pytest.raises(LocalProtocolError, match="receiver"):
        _ = PsiResponder(ids_b, reveal="receiver").intersection_rows


def test_cardinality_mode_initiator_cannot_map_points_to_its_ids() -> None:
    ids_a = [f"user-{i}" for i in range(60)]
    ids_b = [f"user-{i}" for i in range(30, 100)]
    run = Run(ids_a, ids_b, chunk_points=16, reveal="cardinality", fixed=True).step_hello()
    sent = all_points(run.blinded, InitiatorBlindedPoints)
    run.step_blinded()
    # What "both" would return: (H(x)^a)^b in the order a sent H(x)^a, i.e. mappable to its IDs.
    in_sent_order = split_points(_ecdh.multiply_blob(SCALAR_B, sent))
    returned = split_points(all_points(run.reply, DoubleBlindedInitiatorPoints))
    assert sorted(returned) == sorted(in_sent_order)  # the same values ...
    assert returned != in_sent_order  # ... in another, secret order (60! orders)
    same_position = sum(x == y for x, y in zip(returned, in_sent_order))
    assert same_position < 10
    run.step_reply()
    assert [type(e.message) for e in run.final] == [IntersectionCardinality]
    assert run.a.result is not None and run.a.state is PsiState.DONE
    assert run.b.result is None and run.b.state is PsiState.WAIT_CARDINALITY
    run.step_final()
    for role in (run.a, run.b):
        assert role.result is not None and role.result.rows is None
        assert role.result.cardinality == 30
        with pytest.raises(LocalProtocolError):
            _ = role.intersection_rows


def test_cardinality_message_checks() -> None:
    run = Run(A_IDS, B_IDS, reveal="cardinality").step_hello().step_blinded().step_reply()
    (good,) = run.final
    assert_rejected(run.b, replace(good, count=-1), "outside")
    assert_rejected(run.b, replace(good, count=len(B_IDS) + 1), "outside")
    assert_rejected(run.b, Envelope(bytes(16), 3, good.message), "another session")
    assert_rejected(run.b, Envelope(good.session_id, 2, good.message), "expected round 3")
    run.step_final()
    assert run.b.result is not None and run.b.result.cardinality == 3


@pytest.mark.parametrize("reveal", REVEAL_MODES)
def test_wrong_chunk_count_and_missing_chunks(reveal: str) -> None:
    run = Run(A_IDS, B_IDS, chunk_points=4, reveal=reveal).step_hello()
    first, second = run.blinded
    assert_rejected(run.b, replace(first, chunk_index=2), "expected chunk 0 of 2")
    feed(run.b, [first])
    assert_rejected(run.b, first, "expected chunk 1 of 2")  # a chunk sent twice
    assert run.b.result is None and run.b.state is PsiState.WAIT_INITIATOR_POINTS
    feed(run.b, [second])
    assert_rejected(run.b, replace(second, chunk_index=2))  # one chunk more than announced

    # The initiator gets its chunks back one short: it keeps waiting, with no result.
    fresh = Run(A_IDS, B_IDS, chunk_points=4, reveal=reveal).step_hello().step_blinded()
    own = fresh.of_type(fresh.reply, DoubleBlindedInitiatorPoints)
    peer = fresh.of_type(fresh.reply, ResponderBlindedPoints)
    assert len(own) == len(peer) == 2
    feed(fresh.a, own[:1])
    assert fresh.a.state is PsiState.WAIT_DOUBLE_BLINDED_INITIATOR_POINTS and fresh.a.result is None
    assert_rejected(fresh.a, peer[0], "expected DoubleBlindedInitiatorPoints")
    feed(fresh.a, own[1:])
    assert_rejected(fresh.a, replace(peer[1], chunk_index=1), "expected chunk 0 of 2")
    fresh.final = feed(fresh.a, peer[:1])
    assert fresh.a.result is None  # one chunk short: no partial output
    assert_rejected(fresh.a, replace(peer[1], chunk_index=5), "expected chunk 1 of 2")
    fresh.final += feed(fresh.a, peer[1:])
    fresh.step_final()
    check_mode(
        psi.TwoPartyPsiResult(fresh.a.result, fresh.b.result, None),  # type: ignore[arg-type]
        A_IDS,
        B_IDS,
    )


def test_replay_from_another_session_is_rejected() -> None:
    old = Run(A_IDS, B_IDS, chunk_points=4).complete()
    new = Run(A_IDS, B_IDS, chunk_points=4).step_hello()
    assert old.a.session_id != new.a.session_id
    assert_rejected(new.b, old.blinded[0], "another session")
    new.step_blinded()
    for env in old.of_type(old.reply, DoubleBlindedInitiatorPoints):
        assert_rejected(new.a, env, "another session")
    new.step_reply()
    assert_rejected(new.b, old.final[0], "another session")
    # A replayed hello reaches a fresh responder as a new session it cannot complete:
    # the old initiator's scalar is gone, and the new session id differs.
    replayed = PsiResponder(B_IDS)
    (rhello,) = feed(replayed, old.hello)
    assert rhello.session_id != old.a.session_id
    new.step_final()
    check_pair(A_IDS, B_IDS, new.a.intersection_rows, new.b.intersection_rows)


def test_repeats_across_chunks_rejected_at_the_last_chunk() -> None:
    run = Run(A_IDS, B_IDS, chunk_points=4).step_hello().step_blinded()
    dbi = run.of_type(run.reply, DoubleBlindedInitiatorPoints)
    feed(run.a, dbi[:1])
    first_point = dbi[0].message.points[:32]  # type: ignore[attr-defined]
    last = dbi[1].message.points  # type: ignore[attr-defined]
    assert_rejected(run.a, replace(dbi[1], points=first_point + last[32:]), "repeated")
    low = LOW_ORDER_POINTS[2]
    assert_rejected(run.a, replace(dbi[1], points=low + last[32:]), "small order")
    feed(run.a, dbi[1:])
    assert run.a.state is PsiState.WAIT_RESPONDER_POINTS


def test_mode_and_suite_must_match() -> None:
    for reveal in ("receiver", "cardinality"):
        run = Run(A_IDS, B_IDS, reveal="both")
        strict = PsiResponder(B_IDS, reveal=reveal)
        assert_rejected(strict, run.hello[0], "accepts only")
    run = Run(A_IDS, B_IDS, hash_to_curve="elligator2")
    assert_rejected(PsiResponder(B_IDS), run.hello[0], "suite")
    assert run.hello[0].message.suite == _ecdh.SUITES["elligator2"] != _ecdh.SUITE  # type: ignore[attr-defined]
    # A hello whose parameters were changed in transit gives another session id.
    hello = run.hello[0]
    b = PsiResponder(B_IDS, hash_to_curve="elligator2")
    (rhello,) = feed(b, [replace(hello, chunk_points=5)])
    assert_rejected(run.a, rhello, "another session")
    with pytest.raises(ParameterError):
        PsiInitiator(A_IDS, reveal="everyone")
    with pytest.raises(ParameterError):
        PsiResponder(A_IDS, hash_to_curve="sha1")
    with pytest.raises(ParameterError):
        PsiInitiator(A_IDS, positions_follow=True, reveal="cardinality")
    with pytest.raises(ParameterError):
        PsiInitiator(A_IDS, engine="pool")  # type: ignore[arg-type]
    with pytest.raises(ParameterError):
        psi.run_two_party(["x"], ["x"], reveal="nobody")
    with pytest.raises(ParameterError):
        psi.run_two_party(["x"], ["x"], n_jobs=0)
    with pytest.raises(DataError, match="row 1"):
        PsiResponder(["ok", "bad\ud800"])
    hello_follow = replace(Run(A_IDS, B_IDS, reveal="receiver").hello[0], positions_follow=True)
    assert_rejected(PsiResponder(B_IDS, reveal="receiver"), hello_follow, "positions_follow")


def test_isin_points_exact_fallback_and_permutation() -> None:
    rng = np.random.default_rng(1)
    peer = rng.integers(0, 256, size=(50, 32), dtype=np.uint8)
    peer[1, :8] = peer[0, :8]  # two peer values share their 64-bit prefix
    own = np.concatenate([peer[[0, 1, 7]], rng.integers(0, 256, size=(5, 32), dtype=np.uint8)])
    own[4, :8] = peer[0, :8]  # same prefix, different value
    as_s32 = lambda a: np.frombuffer(a.tobytes(), dtype="S32")  # noqa: E731
    expected = [True, True, True] + [False] * 5
    assert _ecdh.isin_points(as_s32(own), as_s32(peer)).tolist() == expected
    expected[0] = False
    assert _ecdh.isin_points(as_s32(own), as_s32(peer[1:])).tolist() == expected
    same_prefix = np.concatenate([peer[:1], peer[:1]])
    same_prefix[1, 20] ^= 1
    assert not _ecdh.has_repeats(as_s32(same_prefix))
    assert _ecdh.has_repeats(as_s32(np.concatenate([same_prefix, peer[:1]])))
    assert not _ecdh.has_repeats(as_s32(peer[:1]))
    perm = _ecdh.permutation(1000)
    assert sorted(perm.tolist()) == list(range(1000)) and perm.tolist() != list(range(1000))
    assert _ecdh.permutation(0).size == 0


# -- align errors -----------------------------------------------------------------------------
SECRET_ID = "very-secret-id-4711"


@pytest.mark.parametrize(
    ("frames", "kwargs", "error", "match"),
    [
        ({"a": pd.DataFrame({"id": ["x"]})}, {}, ParameterError, "at least 2"),
        ({}, {}, ParameterError, "at least 2"),
        (
            {"a": pd.DataFrame({"id": ["x"]}), "b": pd.DataFrame({"id": ["x"]})},
            {"leader": "c"},
            ParameterError,
            "leader",
        ),
        (
            {"a": pd.DataFrame({"id": ["x"]}), "b": [1, 2]},
            {},
            ParameterError,
            "party 'b'",
        ),
        (
            {"a": pd.DataFrame({"id": ["x"]}), "b": pd.DataFrame({"ID": ["x"]})},
            {},
            DataError,
            "party 'b': no ID column 'id'",
        ),
        (
            {
                "a": pd.DataFrame({"id": [SECRET_ID, "y", SECRET_ID, "z", "z", "z"]}),
                "b": pd.DataFrame({"id": ["x"]}),
            },
            {},
            DataError,
            "party 'a': 3 duplicate ID",
        ),
        (
            {"a": pd.DataFrame({"id": [1, "1"]}), "b": pd.DataFrame({"id": ["1"]})},
            {},
            DataError,
            "party 'a': 1 duplicate",
        ),
        (
            {"a": pd.DataFrame({"id": ["x"]}), "b": pd.DataFrame({"id": ["x", None, np.nan]})},
            {},
            DataError,
            "party 'b': 2 null",
        ),
        (
            {"a": pd.DataFrame({"id": [SECRET_ID]}), "b": pd.DataFrame({"id": ["other"]})},
            {},
            DataError,
            "no ID in common",
        ),
        (
            {
                "a": pd.DataFrame({"id": ["x", "y"]}),
                "b": pd.DataFrame({"id": ["x", "z"]}),
                "c": pd.DataFrame({"id": ["y", "z"]}),
            },
            {},
            DataError,
            "no ID in common",
        ),
        (
            {"a": pd.DataFrame([["x", "y"]], columns=["id", "id"]), "b": pd.DataFrame({"id": []})},
            {},
            DataError,
            "party 'a': 2 columns",
        ),
    ],
)
def test_align_errors(
    frames: dict[str, pd.DataFrame], kwargs: dict[str, str], error: type[Exception], match: str
) -> None:
    originals = {k: v.copy() if isinstance(v, pd.DataFrame) else v for k, v in frames.items()}
    result = None
    with pytest.raises(error, match=match) as info:
        result = psi.align(frames, **kwargs)
    assert result is None
    assert SECRET_ID not in str(info.value)
    for name, frame in frames.items():
        if isinstance(frame, pd.DataFrame):
            pd.testing.assert_frame_equal(frame, originals[name])


def test_public_names() -> None:
    assert set(psi.__all__) >= {
        "align",
        "PsiInitiator",
        "PsiResponder",
        "run_two_party",
        "run_multi_party",
        "REGISTRY",
        "IntersectionPositions",
    }
    for name in psi.__all__:
        assert getattr(psi, name).__doc__
    assert all(100 <= cls.TYPE_ID < 200 for cls in REGISTRY.types())
