"""What each role receives, read off the transcript of a real (small-key) training run."""

from __future__ import annotations

import struct

import gmpy2
import numpy as np
import pytest

from protocols.backend import SecretKey
from protocols.transport import InMemoryTransport
from tests.conftest import TEST_KEY_BITS
from tests.reference import build_session, make_blocks
from vfl.messages import (
    REGISTRY,
)
from vfl.roles import ActiveParty, PassiveParty
from vfl.runner import run_session


class _PlainAddActiveParty(ActiveParty):
    """The flawed variant the issue warns about: the label term added as a plaintext."""

    def _add_label_term(self, total, term):
        return self._key().add_plain(total, term)


def _train(passives=("retailer",), active_cls=ActiveParty, n=300, epochs=2):
    dims = {"bank": 3, "retailer": 4, "telco": 2}
    blocks, y = make_blocks(n, {k: dims[k] for k in ("bank", *passives)}, seed=7)
    roles, plan, secret_key = build_session(
        blocks, y, passives, active_cls=active_cls, max_iter=epochs, seed=1
    )
    transport = InMemoryTransport(roles, keep_payloads=True)
    run_session(roles, (roles["c"], roles["c"].start()), transport, REGISTRY)
    return roles, transport.transcript, blocks, y, plan, secret_key


@pytest.fixture(scope="module")
def run():
    from protocols.testing import insecure_keys_allowed

    with insecure_keys_allowed():
        yield _train(passives=("retailer", "telco"))


def test_each_role_receives_only_its_message_types(run):
    roles, transcript, *_ = run
    received: dict[str, set[str]] = {}
    for entry in transcript:
        received.setdefault(entry.receiver, set()).add(entry.message_type)
    passive_allowed = {
        "PublicKeyAnnouncement",
        "RoundStart",
        "EncryptedResidual",
        "MaskedGradientDecryption",
        "TrainingComplete",
    }
    assert received["retailer"] <= passive_allowed
    assert received["telco"] <= passive_allowed
    assert received["c"] == {"MaskedGradient", "EncryptedLoss"}
    assert received["bank"] <= passive_allowed - {"EncryptedResidual"} | {
        "EncryptedPartialScores",
        "EncryptedCrossTerm",
    }
    # every entry has the metadata the issue asks for
    assert all(e.size_bytes == len(e.payload) and e.round_index >= 0 for e in transcript)


def test_only_the_coordinator_holds_a_secret_key(run):
    roles, transcript, *_ = run

    def holds_secret(obj, depth=0):
        if isinstance(obj, SecretKey):
            return True
        if depth > 2:
            return False
        values = vars(obj).values() if hasattr(obj, "__dict__") else []
        if isinstance(obj, dict):
            values = obj.values()
        elif isinstance(obj, (list, tuple)):
            values = obj
        return any(holds_secret(v, depth + 1) for v in values)

    assert holds_secret(roles["c"])
    for name in ("bank", "retailer", "telco"):
        assert not holds_secret(roles[name])
    # the announced public key carries n and h_s only: header + 3 * (key_bits / 8) bytes
    announcement = next(e for e in transcript if e.message_type == "PublicKeyAnnouncement")
    message = REGISTRY.decode(announcement.payload).message
    assert len(message.public_key) == 5 + 3 * TEST_KEY_BITS // 8


def test_coordinator_decrypts_only_masked_gradients(run):
    roles, transcript, _, _, _, secret_key = run
    key = secret_key.public_key
    n = int(key.n)
    width = TEST_KEY_BITS // 8
    slots = []
    for entry in transcript:
        if entry.message_type != "MaskedGradient":
            continue
        vector = key.ciphertext_from_bytes(REGISTRY.decode(entry.payload).message.values, depth=1)
        raw = secret_key.decrypt_masked(vector)
        plaintexts = [
            int.from_bytes(raw[len(raw) - (i + 1) * width : len(raw) - i * width], "big")
            for i in range(len(vector.values))
        ]
        assert all(0 <= v < n for v in plaintexts)
        if not vector.packed:  # masks uniform in Z_n
            slots += [(v.bit_length(), TEST_KEY_BITS) for v in plaintexts]
            continue
        # packed: slots of slot_bits bits, each v + 2^B + r with r uniform in [0, 2^(slot_bits-1))
        per = (key.key_bits - 1) // vector.slot_bits
        for p in plaintexts:
            for _ in range(per):
                slots.append(((p & ((1 << vector.slot_bits) - 1)).bit_length(), vector.slot_bits))
                p >>= vector.slot_bits
    slots = [s for s in slots if s[0]]  # unused trailing slots of the last plaintext are 0
    # unmasked gradients at scale 2^64 are below 2^90; every decrypted slot carries a mask
    # within a few bits of its full width (a miss has probability ~2^-30 per slot)
    assert len(slots) > 20
    assert all(bits > full - 30 and bits > 90 + 40 for bits, full in slots)


def test_no_raw_feature_or_label_bytes_cross(run):
    roles, transcript, blocks, y, *_ = run
    frames = b"".join(e.payload for e in transcript)
    for block in blocks.values():
        for value in block[:20].ravel():
            for encoded in (
                struct.pack(">d", value),
                struct.pack("<d", value),
                struct.pack(">q", int(round(value * 2**32))),
            ):
                assert encoded not in frames
    assert y.astype(">f8").tobytes()[:64] not in frames
    assert y.astype("<f8").tobytes()[:64] not in frames
    assert y.astype(np.uint8).tobytes()[:64] not in frames


def _strip_own_scores(roles, transcript, passive):
    """The curious passive party divides its own [[u]] out of the [[4d]] it receives and
    tries to read the rest as a deterministic encoding 1 + k n. Returns k or None per sample."""
    key = roles[passive].public_key
    n, n2 = int(key.n), key.nsquare
    sent = {
        e.round_index: REGISTRY.decode(e.payload).message
        for e in transcript
        if e.sender == passive and e.message_type == "EncryptedPartialScores"
    }
    got = {
        e.round_index: REGISTRY.decode(e.payload).message
        for e in transcript
        if e.receiver == passive and e.message_type == "EncryptedResidual"
    }
    recovered = {}
    for round_index, residual_msg in got.items():
        own = key.ciphertext_from_bytes(sent[round_index].scores)
        residual = key.ciphertext_from_bytes(residual_msg.residual)
        values = []
        for c_d, c_u in zip(residual.values, own.values):
            quotient = c_d * gmpy2.invert(c_u, n2) % n2
            if (quotient - 1) % n:
                values.append(None)
                continue
            k = int((quotient - 1) // n)
            values.append((k - n if k > n // 2 else k) / 2**32)
        recovered[round_index] = values
    return recovered


def test_passive_party_cannot_strip_its_own_ciphertext(small_keys):
    roles, transcript, _, y, plan, _ = _train(passives=("retailer",))
    recovered = _strip_own_scores(roles, transcript, "retailer")
    assert recovered and all(v is None for values in recovered.values() for v in values)


def test_the_attack_works_against_a_plaintext_add(small_keys):
    # Control: the same attack reads every label when the label term is added as plaintext.
    roles, transcript, _, y, plan, _ = _train(
        passives=("retailer",), active_cls=_PlainAddActiveParty
    )
    recovered = _strip_own_scores(roles, transcript, "retailer")
    first_round = min(recovered)
    rows = plan.batch_indices(0, 0)
    # in round 1 the bank's weights are zero, so the readable term is exactly 2 - 4y
    np.testing.assert_allclose(recovered[first_round], 2.0 - 4.0 * y[rows], atol=1e-9)


def test_no_ciphertext_is_ever_repeated(run):
    # A sanity check over every ciphertext field (the targeted freshness checks are the strip
    # attack and the cross-term and later-score tests). A broadcast (the same residual to every
    # passive party) is one blob sent twice and counted once.
    roles, transcript, *_ = run
    key = roles["retailer"].public_key
    seen: set[int] = set()
    blobs: set[bytes] = set()
    fields = ("scores", "squared_sum", "residual", "later_scores", "value", "values")
    skip = {"MaskedGradientDecryption", "PublicKeyAnnouncement"}
    for entry in transcript:
        if entry.message_type in skip:
            continue
        message = REGISTRY.decode(entry.payload).message
        for field in fields:
            data = getattr(message, field, b"")
            if isinstance(data, bytes) and data and data not in blobs:
                blobs.add(data)
                values = {int(c) for c in key.ciphertext_from_bytes(data).values}
                assert not values & seen, f"{entry.message_type}.{field} repeats a ciphertext"
                seen |= values
    assert len(seen) > 1000


class _NoRerandomizePassive(PassiveParty):
    """Flawed control: the cross term is the deterministic product."""

    def _cross_term(self, later):
        key = self._key()
        return key.dot_columns(self._own_scores[:, None], later)


def _cross_terms_are_deterministic(roles, transcript, secret_key, passive):
    """What the label party can compute if it guesses the passive party's scores exactly."""
    key = secret_key.public_key
    decode = REGISTRY.decode
    scores = {
        e.round_index: decode(e.payload).message
        for e in transcript
        if e.sender == passive and e.message_type == "EncryptedPartialScores"
    }
    later = {
        e.round_index: decode(e.payload).message
        for e in transcript
        if e.receiver == passive and e.message_type == "EncryptedResidual"
    }
    cross = {
        e.round_index: decode(e.payload).message
        for e in transcript
        if e.sender == passive and e.message_type == "EncryptedCrossTerm"
    }
    assert cross and set(cross) == set(later)
    verdicts = []
    for round_index, message in cross.items():
        u = secret_key.decrypt(key.ciphertext_from_bytes(scores[round_index].scores))
        later_vec = key.ciphertext_from_bytes(later[round_index].later_scores)
        guess = key.dot_columns(u[:, None], later_vec).values[0]
        verdicts.append(int(guess) == int(key.ciphertext_from_bytes(message.value).values[0]))
    return verdicts


def test_cross_terms_are_rerandomised(small_keys):
    roles, transcript, *_, secret_key = _train(passives=("retailer", "telco"))
    assert not any(_cross_terms_are_deterministic(roles, transcript, secret_key, "retailer"))


def test_cross_term_check_catches_a_missing_rerandomisation(small_keys, monkeypatch):
    import vfl.roles

    monkeypatch.setattr(vfl.roles.PassiveParty, "_cross_term", _NoRerandomizePassive._cross_term)
    roles, transcript, *_, secret_key = _train(passives=("retailer", "telco"))
    assert all(_cross_terms_are_deterministic(roles, transcript, secret_key, "retailer"))


def test_later_scores_are_rerandomised(run):
    roles, transcript, *_, secret_key = run
    key = secret_key.public_key
    decode = REGISTRY.decode
    telco_scores = {
        e.round_index: key.ciphertext_from_bytes(decode(e.payload).message.scores)
        for e in transcript
        if e.sender == "telco" and e.message_type == "EncryptedPartialScores"
    }
    for entry in transcript:
        if entry.receiver == "retailer" and entry.message_type == "EncryptedResidual":
            later = key.ciphertext_from_bytes(decode(entry.payload).message.later_scores)
            sent = telco_scores[entry.round_index]
            assert not {int(c) for c in later.values} & {int(c) for c in sent.values}
            # ... and they carry the same plaintexts
            np.testing.assert_allclose(secret_key.decrypt(later), secret_key.decrypt(sent))
