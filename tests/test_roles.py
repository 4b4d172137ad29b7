"""State machines: every message a state does not allow is rejected and changes nothing."""

from __future__ import annotations

import copy
import dataclasses
import enum
import secrets

import numpy as np
import pytest

from protocols import get_backend
from protocols.errors import LocalProtocolError, ParameterError, RemoteProtocolError
from protocols.transport import InMemoryTransport
from protocols.wire import Envelope
from tests.conftest import TEST_KEY_BITS
from tests.reference import build_session, make_blocks
from vfl.messages import (
    REGISTRY,
    EncryptedLoss,
    EncryptedPartialScores,
    MaskedGradient,
    PublicKeyAnnouncement,
    RoundStart,
    TrainingComplete,
)
from vfl.roles import ActiveParty, PassiveParty
from vfl.runner import _send as send
from vfl.runner import run_session

_DUMMY = {int: 0, bool: False, bytes: b"", str: "", float: 0.0}


def _dummy(cls):
    hints = {f.name: f.type for f in dataclasses.fields(cls)}
    values = {}
    for name, hint in hints.items():
        kind = {"int": int, "bool": bool, "bytes": bytes, "str": str, "float": float}[hint]
        values[name] = _DUMMY[kind]
    return cls(**values)


def _setup(passives=("retailer", "telco")):
    dims = {"bank": 3, "retailer": 2, "telco": 2}
    blocks, y = make_blocks(120, {k: dims[k] for k in ("bank", *passives)}, seed=2)
    roles, plan, _ = build_session(blocks, y, passives, batch_size=40)
    return roles, plan


def _snapshot(role):
    """Every attribute of a role, in a comparable form (arrays by value, objects by identity)."""
    out = {}
    for name, value in vars(role).items():
        if isinstance(value, np.ndarray):
            out[name] = ("array", value.tobytes())
        elif isinstance(value, dict):
            out[name] = ("dict", tuple((k, id(v)) for k, v in value.items()))
        elif isinstance(value, (int, float, str, bytes, bool, type(None), tuple)) or isinstance(
            value, enum.Enum
        ):
            out[name] = value
        else:
            out[name] = ("object", id(value))
    return out


def _same(a, b):
    return a == b


def test_every_disallowed_message_is_rejected_without_state_change(small_keys):
    roles, plan = _setup()
    transport = InMemoryTransport(roles)
    coordinator = roles["c"]
    send(transport, REGISTRY, coordinator, coordinator.start())
    rejected = 0
    while transport.has_pending():
        for name, role in roles.items():
            got = transport.receive(name)
            if got is None:
                continue
            sender, frame = got
            envelope = REGISTRY.decode(frame)
            before = _snapshot(role)
            # every other message type, from the real sender, in the real round and session
            # (an idle party may get either RoundStart or TrainingComplete: both are legal)
            legal = {type(envelope.message)}
            if legal & {RoundStart, TrainingComplete}:
                legal |= {RoundStart, TrainingComplete}
            for cls in REGISTRY.types():
                if cls in legal:
                    continue
                fake = Envelope(envelope.session_id, envelope.round_index, _dummy(cls))
                with pytest.raises(RemoteProtocolError):
                    role.handle(sender, fake)
                assert _same(before, _snapshot(role))
                rejected += 1
            # the right message from another session, in another round, or from another sender
            if role.state.name != "WAIT_KEY":
                other = Envelope(secrets.token_bytes(16), envelope.round_index, envelope.message)
                wrong_round = Envelope(
                    envelope.session_id, envelope.round_index + 7, envelope.message
                )
                for bad in (other, wrong_round):
                    with pytest.raises(RemoteProtocolError):
                        role.handle(sender, bad)
                    assert _same(before, _snapshot(role))
            with pytest.raises(RemoteProtocolError):
                role.handle("mallory", envelope)
            assert _same(before, _snapshot(role))
            send(transport, REGISTRY, role, role.handle(sender, envelope))
    assert all(role.done for role in roles.values())
    assert rejected > 100
    # after all those rejections training still equals a clean run
    clean, _ = _setup()
    run_session(clean, (clean["c"], clean["c"].start()), InMemoryTransport(clean), REGISTRY)
    # keys differ between runs, weights are deterministic up to the fixed-point tolerance
    for name in ("bank", "retailer", "telco"):
        np.testing.assert_allclose(roles[name].weights, clean[name].weights, atol=1e-8)


def test_message_after_completion_is_rejected(small_keys):
    roles, plan = _setup(passives=("retailer",))
    transport = InMemoryTransport(roles, keep_payloads=True)
    run_session(roles, (roles["c"], roles["c"].start()), transport, REGISTRY)
    last = transport.transcript[-1]
    with pytest.raises(RemoteProtocolError, match="finished"):
        roles[last.receiver].handle(last.sender, REGISTRY.decode(last.payload))


def test_announcement_with_another_plan_is_rejected(small_keys):
    roles, plan = _setup(passives=("retailer",))
    other_plan = dataclasses.replace(plan, learning_rate=0.2)
    key = roles["c"].public_key
    message = PublicKeyAnnouncement(
        backend="paillier", public_key=key.to_bytes(), plan_digest=other_plan.digest()
    )
    with pytest.raises(RemoteProtocolError, match="plan"):
        roles["retailer"].handle("c", Envelope(roles["c"].session_id, 0, message))
    assert roles["retailer"].public_key is None


def test_malformed_frames_are_rejected_by_the_decoder(small_keys):
    roles, plan = _setup(passives=("retailer",))
    item = roles["c"].start()[0]
    frame = REGISTRY.encode(item.message, session_id=roles["c"].session_id, round_index=0)
    for bad in (frame[:-1], frame + b"\x00", b"XX" + frame[2:], frame[:10]):
        with pytest.raises(RemoteProtocolError):
            REGISTRY.decode(bad)


def test_ciphertext_count_mismatch_is_rejected(small_keys):
    roles, plan = _setup(passives=("retailer",))
    transport = InMemoryTransport(roles, keep_payloads=True)
    coordinator = roles["c"]
    outgoing = coordinator.start()
    # deliver the announcement and round start by hand, then send a short residual
    passive = roles["retailer"]
    for item in outgoing:
        if item.receiver == "retailer":
            passive.handle("c", Envelope(coordinator.session_id, item.round_index, item.message))
    key = passive.public_key
    from vfl.messages import EncryptedResidual

    short = EncryptedResidual(
        residual=key.ciphertext_to_bytes(key.encrypt([1.0, 2.0])), later_scores=b""
    )
    before = _snapshot(passive)
    with pytest.raises(RemoteProtocolError, match="ciphertexts"):
        passive.handle("bank", Envelope(coordinator.session_id, 1, short))
    assert _same(before, _snapshot(passive))
    del transport


def test_role_construction_checks(small_keys):
    roles, plan = _setup(passives=("retailer",))
    with pytest.raises(ParameterError):
        PassiveParty("bank", np.zeros((120, 2)), plan)
    with pytest.raises(ParameterError):
        PassiveParty("retailer", np.zeros((119, 2)), plan)
    with pytest.raises(ParameterError):
        ActiveParty("bank", np.zeros((120, 2)), np.full(120, 0.5), plan)
    with pytest.raises(LocalProtocolError):
        roles["c"].start()
        roles["c"].start()
    with pytest.raises(TypeError):
        copy.deepcopy(get_backend("paillier").generate_secret_key(TEST_KEY_BITS))


def _deliver_until(roles, transport, stop):
    """Run the session by hand until ``stop(receiver, envelope)`` is true for the next frame;
    return (receiver, sender, envelope) without delivering it."""
    while transport.has_pending():
        for name, role in roles.items():
            got = transport.receive(name)
            if got is None:
                continue
            sender, frame = got
            envelope = REGISTRY.decode(frame)
            if stop(name, envelope):
                return name, sender, envelope
            send(transport, REGISTRY, role, role.handle(sender, envelope))
    raise AssertionError("stop condition never met")


def _started(passives=("retailer", "telco")):
    roles, plan = _setup(passives)
    transport = InMemoryTransport(roles)
    coordinator = roles["c"]
    send(transport, REGISTRY, coordinator, coordinator.start())
    return roles, plan, transport


def _encrypted(key, size, depth):
    vector = key.encrypt(np.ones(size))
    return vector if depth == 0 else key.mul_plain(vector, np.ones(size))


def _bad_variants(key, good, size, depth):
    """Well-formed messages carrying the wrong ciphertexts for a field of ``depth``."""
    return [
        good[:-1],  # truncated
        b"garbage",
        key.ciphertext_to_bytes(_encrypted(key, size, 1 - depth)),  # right size, wrong scale
        key.ciphertext_to_bytes(_encrypted(key, size + 1, depth)),  # right scale, wrong size
    ]


@pytest.mark.parametrize(
    ("receiver", "message_type", "field", "depth"),
    [
        ("bank", "EncryptedPartialScores", "scores", 0),
        ("bank", "EncryptedPartialScores", "squared_sum", 0),
        ("retailer", "EncryptedResidual", "residual", 0),
        ("retailer", "EncryptedResidual", "later_scores", 0),
        ("bank", "EncryptedCrossTerm", "value", 1),
        ("c", "MaskedGradient", "values", 1),
        ("c", "EncryptedLoss", "value", 1),
    ],
)
def test_bad_ciphertexts_in_well_typed_messages(small_keys, receiver, message_type, field, depth):
    roles, plan, transport = _started()
    name, sender, envelope = _deliver_until(
        roles,
        transport,
        # squared sums, cross terms and the loss come only with the epoch's last batch
        lambda r, e: (
            r == receiver
            and type(e.message).__name__ == message_type
            and bool(getattr(e.message, field))
        ),
    )
    role = roles[name]
    key = role.public_key
    good = getattr(envelope.message, field)
    size = key.ciphertext_from_bytes(good).size
    before = _snapshot(role)
    for bad in _bad_variants(key, good, size, depth):
        forged = dataclasses.replace(envelope.message, **{field: bad})
        with pytest.raises(RemoteProtocolError):
            role.handle(sender, Envelope(envelope.session_id, envelope.round_index, forged))
        assert _same(before, _snapshot(role))
    # the genuine message is still accepted afterwards
    role.handle(sender, envelope)


def test_gradient_of_the_wrong_size_is_refused(small_keys):
    # A passive party must not get a residual-sized vector decrypted (it would read d).
    roles, plan, transport = _started(("retailer",))
    name, sender, envelope = _deliver_until(
        roles,
        transport,
        lambda r, e: r == "c" and isinstance(e.message, MaskedGradient) and True,
    )
    key = roles["c"].public_key
    residual_sized = key.ciphertext_to_bytes(
        key.mask(key.dot_columns(np.ones((40, 40)), key.encrypt(np.ones(40))))[0]
    )
    forged = MaskedGradient(values=residual_sized)
    with pytest.raises(RemoteProtocolError, match="ciphertexts"):
        roles["c"].handle("retailer", Envelope(envelope.session_id, envelope.round_index, forged))


def test_epoch_aggregates_are_refused_before_the_epoch_ends(small_keys):
    # A squared sum or a loss in a batch that does not close the epoch is a protocol error.
    roles, plan, transport = _started(("retailer",))
    assert plan.batches_per_epoch > 1
    name, sender, envelope = _deliver_until(
        roles, transport, lambda r, e: r == "bank" and isinstance(e.message, EncryptedPartialScores)
    )
    assert envelope.message.squared_sum == b""  # batch 0 of several
    bank = roles["bank"]
    key = bank.public_key
    early = dataclasses.replace(
        envelope.message, squared_sum=key.ciphertext_to_bytes(key.encrypt([1.0]))
    )
    before = _snapshot(bank)
    with pytest.raises(RemoteProtocolError, match="squared_sum"):
        bank.handle(sender, Envelope(envelope.session_id, envelope.round_index, early))
    assert _same(before, _snapshot(bank))
    coordinator = roles["c"]
    loss = EncryptedLoss(value=key.ciphertext_to_bytes(key.mul_plain(key.encrypt([1.0]), [1.0])))
    before = _snapshot(coordinator)
    with pytest.raises(RemoteProtocolError, match="from nobody"):
        coordinator.handle("bank", Envelope(envelope.session_id, envelope.round_index, loss))
    assert _same(before, _snapshot(coordinator))


def test_closing_batch_failure_leaves_the_active_party_unchanged(small_keys, monkeypatch):
    # The epoch's last batch adds the squared sums and the own loss term; if that fails, the
    # active party must be exactly as before the message (then accept it once fixed).
    roles, plan, transport = _started(("retailer",))
    last = plan.batches_per_epoch - 1
    name, sender, envelope = _deliver_until(
        roles,
        transport,
        lambda r, e: (
            r == "bank"
            and isinstance(e.message, EncryptedPartialScores)
            and e.round_index == 1 + last
        ),
    )
    bank = roles["bank"]
    key = bank.public_key

    def refuse(value):
        raise ParameterError("total too large")

    monkeypatch.setattr(key, "encrypt_total", refuse)
    before = _snapshot(bank)
    with pytest.raises(ParameterError, match="too large"):
        bank.handle(sender, envelope)
    assert _same(before, _snapshot(bank))
    monkeypatch.undo()
    assert any(isinstance(o.message, EncryptedLoss) for o in bank.handle(sender, envelope))
