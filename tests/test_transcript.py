"""What each role receives, read off the transcript of a real training run, for both backends.

Paillier runs use small test keys; CKKS runs use the real parameters (N = 8192 for these widths),
300 rows and 2 epochs, which take about two seconds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import struct
from typing import NamedTuple

import gmpy2
import numpy as np
import pytest
import tenseal.sealapi as seal

from protocols.backend import SecretKey
from protocols.ckks import CKKSCiphertextVector, _load, _save, _value_slots
from protocols.errors import RemoteProtocolError
from protocols.transport import InMemoryTransport, TranscriptEntry
from tests.conftest import TEST_KEY_BITS
from tests.reference import build_session, make_blocks
from vfl.messages import (
    REGISTRY,
)
from vfl.roles import ActiveParty, PassiveParty
from vfl.runner import run_session

BACKENDS = ("paillier", "ckks")


class _PlainAddActiveParty(ActiveParty):
    """The flawed variant the issue warns about: the label term added as a plaintext."""

    def _add_label_term(self, total, term):
        return self._key().add_plain(total, term)


class _Run(NamedTuple):
    roles: dict
    transcript: list[TranscriptEntry]
    blocks: dict[str, np.ndarray]
    y: np.ndarray
    plan: object
    #: (method, serialised ciphertext) of every decryption the coordinator asked for
    decryptions: list[tuple[str, bytes]]
    secret_key: SecretKey


def _recording(secret_key, method, log):
    inner = getattr(secret_key, method)

    def record(vector):
        log.append((method, secret_key.public_key.ciphertext_to_bytes(vector)))
        return inner(vector)

    return record


def _train(passives=("retailer",), active_cls=ActiveParty, n=300, epochs=2, backend="paillier"):
    dims = {"bank": 3, "retailer": 4, "telco": 2}
    blocks, y = make_blocks(n, {k: dims[k] for k in ("bank", *passives)}, seed=7)
    roles, plan, secret_key = build_session(
        blocks, y, passives, active_cls=active_cls, max_iter=epochs, seed=1, backend=backend
    )
    transport = InMemoryTransport(roles, keep_payloads=True)
    decryptions: list[tuple[str, bytes]] = []
    with pytest.MonkeyPatch.context() as patch:
        for method in ("decrypt", "decrypt_masked"):
            patch.setattr(secret_key, method, _recording(secret_key, method, decryptions))
        run_session(roles, (roles["c"], roles["c"].start()), transport, REGISTRY)
    return _Run(roles, transport.transcript, blocks, y, plan, decryptions, secret_key)


@pytest.fixture(scope="module")
def paillier_run():
    from protocols.testing import insecure_keys_allowed

    with insecure_keys_allowed():
        yield _train(passives=("retailer", "telco"))


@pytest.fixture(scope="module")
def ckks_run():
    return _train(passives=("retailer", "telco"), backend="ckks")


@pytest.fixture(params=BACKENDS)
def run(request):
    return request.getfixturevalue(f"{request.param}_run")


def _messages(transcript, message_type, **where):
    return [
        (e, REGISTRY.decode(e.payload).message)
        for e in transcript
        if e.message_type == message_type and all(getattr(e, k) == v for k, v in where.items())
    ]


def _first_round(run):
    """Round 1's residual 4d = 2 - 4y (all weights are 0) and each party's design matrix."""
    rows = run.plan.batch_indices(0, 0)
    designs = {name: block[rows] for name, block in run.blocks.items()}
    designs["bank"] = np.hstack([designs["bank"], np.ones((rows.size, 1))])  # the intercept
    return 2.0 - 4.0 * run.y[rows], designs


# -- what crosses, and to whom ---------------------------------------------------------------


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


def _holds_secret(obj, depth=0):
    # SEAL's own secret key or decryptor count too: a party could hold one outside a SecretKey
    if isinstance(obj, (SecretKey, seal.SecretKey, seal.Decryptor)):
        return True
    if depth > 2:
        return False
    values = vars(obj).values() if hasattr(obj, "__dict__") else []
    if isinstance(obj, dict):
        values = obj.values()
    elif isinstance(obj, (list, tuple)):
        values = obj
    return any(_holds_secret(v, depth + 1) for v in values)


def test_only_the_coordinator_holds_a_secret_key(run):
    roles = run.roles
    assert _holds_secret(roles["c"])
    for name in ("bank", "retailer", "telco"):
        assert not _holds_secret(roles[name])


def _check_announced_key(backend, public_key):
    """The announced key is exactly its public parts."""
    if backend == "paillier":  # n and h_s only: header + 3 * (key_bits / 8) bytes
        assert len(public_key) == 5 + 3 * TEST_KEY_BITS // 8
        return
    # CKKS: a 7-byte header, then length-prefixed parameters and public key (no evaluation keys)
    offset, parts = 7, []
    while offset < len(public_key):
        (length,) = struct.unpack_from(">I", public_key, offset)
        parts.append(public_key[offset + 4 : offset + 4 + length])
        offset += 4 + length
    assert offset == len(public_key) and len(parts) == 2
    params = seal.EncryptionParameters(seal.SCHEME_TYPE.CKKS)
    _load(params, None, parts[0], "parameters")
    context = seal.SEALContext(params, True, seal.SEC_LEVEL_TYPE.TC128)
    _load(seal.PublicKey(), context, parts[1], "public key")
    # control: SEAL tells a secret key from a public one (the loads above can fail)
    with pytest.raises(RemoteProtocolError):
        _load(seal.PublicKey(), context, _save(seal.KeyGenerator(context).secret_key()), "sk")


def test_the_announcement_carries_only_public_key_material(run):
    announcements = _messages(run.transcript, "PublicKeyAnnouncement")
    assert {e.receiver for e, _ in announcements} == {"bank", "retailer", "telco"}
    keys = {m.public_key for _, m in announcements}
    assert keys == {run.secret_key.public_key.to_bytes()}
    for key in keys:
        _check_announced_key(run.plan.backend, key)


def _unexpected_decryptions(transcript, decryptions):
    """What the coordinator decrypted beyond each masked gradient (masked) and the loss."""
    gradients = [m.values for _, m in _messages(transcript, "MaskedGradient")]
    losses = [m.value for _, m in _messages(transcript, "EncryptedLoss")]
    masked = sorted(blob for method, blob in decryptions if method == "decrypt_masked")
    unmasked = sorted(blob for method, blob in decryptions if method == "decrypt")
    problems = []
    if masked != sorted(gradients):
        problems.append("masked decryptions are not exactly one per MaskedGradient")
    if unmasked != sorted(losses):
        problems.append("plain decryptions are not exactly one per EncryptedLoss")
    return problems


def test_coordinator_decrypts_only_masked_gradients_and_the_loss(run):
    transcript, decryptions = run.transcript, run.decryptions
    assert any(method == "decrypt" for method, _ in decryptions)
    assert not _unexpected_decryptions(transcript, decryptions)
    # each decryption goes back to the party that sent the masked gradient, in its round
    sent = {(e.round_index, e.sender) for e, _ in _messages(transcript, "MaskedGradient")}
    returned = _messages(transcript, "MaskedGradientDecryption")
    assert len(sent) > 10 and sorted(sent) == sorted(
        (e.round_index, e.receiver) for e, _ in returned
    )
    # control: a plain decryption of a gradient (or a second one of the loss) is caught
    gradient = _messages(transcript, "MaskedGradient")[0][1].values
    loss = next(blob for method, blob in decryptions if method == "decrypt")
    assert _unexpected_decryptions(transcript, [*decryptions, ("decrypt", gradient)])
    assert _unexpected_decryptions(transcript, [*decryptions, ("decrypt", loss)])


@pytest.mark.parametrize("run", ["paillier"], indirect=True)
def test_masked_gradient_slots_are_full_width_paillier(run):
    roles, transcript, *_, secret_key = run
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


def _ckks_slots(secret_key, vector):
    """Every slot of every ciphertext of ``vector``, decrypted with the coordinator's key."""
    key = secret_key.public_key
    arrays = []
    for ct in vector.cts:
        plain = seal.Plaintext()
        secret_key._decryptor.decrypt(ct, plain)
        arrays.append(np.asarray(key._encoder.decode_double(plain)))
    return arrays


def _blocks(slots, width):
    """The ``per x width`` blocks of one decrypted ciphertext (the tail slots hold no value)."""
    per = slots.size // width
    return slots[: per * width].reshape(per, width)


def _block_sums(slots, width):
    blocks = _blocks(slots, width)
    return np.array([math.fsum(blocks[:, j]) for j in range(width)])


def _slots_blinded(slots):
    """No slot shows a partial sum: blinds (uniform, about 2^31 to 2^33 here) dwarf partial
    sums below 2^12, so fewer than 1% of slots fall below 2^24."""
    return bool(np.mean(np.abs(slots) < 2.0**24) < 0.01)


@pytest.mark.parametrize("run", ["ckks"], indirect=True)
def test_masked_gradient_slots_are_masked_ckks(run):
    # The coordinator decrypts every slot of a masked gradient: each slot holds a blinded
    # partial sum, and the block sums (the gradient) carry the party's mask.
    key, secret_key = run.secret_key.public_key, run.secret_key
    gradients = _messages(run.transcript, "MaskedGradient")
    assert len(gradients) >= 3 * 6
    for _, message in gradients:
        for slots in _ckks_slots(secret_key, key.ciphertext_from_bytes(message.values, depth=1)):
            assert slots.size == key.slots and _slots_blinded(slots)
    first = min(e.round_index for e, _ in gradients)
    residual, designs = _first_round(run)
    for name, design in designs.items():
        gradient = design.T @ residual
        ((_, message),) = _messages(
            run.transcript, "MaskedGradient", sender=name, round_index=first
        )
        (masked,) = _ckks_slots(secret_key, key.ciphertext_from_bytes(message.values))
        sums = _block_sums(masked, key.width)[: gradient.size]
        assert np.min(np.abs(sums - gradient)) > 1e3  # round 1: far from the true gradient
        # every slot differs from the bare partial sums it hides (a blind within 0.01 of zero
        # has probability about 2^-40); the same reads on the bare product show the gradient
        (product,) = _ckks_slots(secret_key, key.dot_columns(design, key.encrypt(residual)))
        assert np.all(np.abs(masked - product) > 1e-2)
        assert not _slots_blinded(product)
        np.testing.assert_allclose(
            _block_sums(product, key.width)[: gradient.size], gradient, atol=1e-3
        )


@pytest.mark.parametrize("run", ["ckks"], indirect=True)
def test_loss_decryption_shows_only_the_loss_ckks(run):
    # Every slot is blinded; the block sums hold the loss in column 0 and zero elsewhere: no
    # partial sum and no separate part of the loss (squared sums, cross terms) can be read.
    key, secret_key = run.secret_key.public_key, run.secret_key
    losses = _messages(run.transcript, "EncryptedLoss")
    assert len(losses) == 2  # one per epoch
    for _, message in losses:
        vector = key.ciphertext_from_bytes(message.value, depth=1)
        (slots,) = _ckks_slots(secret_key, vector)
        (loss,) = secret_key.decrypt(vector)
        assert abs(loss) > 1.0 and _slots_blinded(slots)
        expected = [loss] + [0.0] * (key.width - 1)
        np.testing.assert_allclose(_block_sums(slots, key.width), expected, atol=1e-3)


def _raw_leaks(frames, blocks, y):
    """Which raw encodings of feature values (first 20 rows) or labels occur in ``frames``."""
    needles = {}
    for name, block in blocks.items():
        for value in block[:20].ravel():
            for encoded in (
                struct.pack(">d", value),
                struct.pack("<d", value),
                struct.pack(">q", int(round(value * 2**32))),
            ):
                needles[encoded] = name
    # one bytes.find per needle over ~30 MB of CKKS frames is slow: filter the 8-byte windows
    # by their first two bytes, then compare the candidates whole
    data = np.frombuffer(frames, dtype=np.uint8)
    table = np.zeros(1 << 16, dtype=bool)
    for needle in needles:
        table[needle[0] << 8 | needle[1]] = True
    pairs = data[:-7].astype(np.uint16) << 8 | data[1:-6]
    starts = np.flatnonzero(table[pairs])
    windows = np.lib.stride_tricks.sliding_window_view(data, 8)[starts]
    candidates = np.ascontiguousarray(windows).view("<u8").ravel()
    wanted = np.frombuffer(b"".join(needles), dtype="<u8")
    hits = np.unique(candidates[np.isin(candidates, wanted)])
    found = [needles[hit.astype("<u8").tobytes()] for hit in hits]
    for encoded in (y.astype(">f8"), y.astype("<f8"), y.astype(np.uint8)):
        if encoded.tobytes()[:64] in frames:
            found.append("labels")
    return found


def test_no_raw_feature_or_label_bytes_cross(run):
    frames = b"".join(dict.fromkeys(e.payload for e in run.transcript))  # broadcasts once
    assert not _raw_leaks(frames, run.blocks, run.y)
    # control: a single raw feature value or the labels are found
    value = run.blocks["telco"][7, 1]
    assert _raw_leaks(frames + struct.pack("<d", value), run.blocks, run.y) == ["telco"]
    labels = run.y.astype(np.uint8).tobytes()
    assert _raw_leaks(b"x" + labels + frames, run.blocks, run.y) == ["labels"]


# -- the passive party strips its own ciphertext from the residual ---------------------------


def _strip_paillier(key, own, residual):
    """Divide ``own`` out of ``residual`` and read the rest as a deterministic encoding
    1 + k n (what an add_plain leaves). Returns (readable, value) per sample."""
    n, n2 = int(key.n), key.nsquare
    readable, values = [], []
    for c_d, c_u in zip(residual.values, own.values):
        quotient = c_d * gmpy2.invert(c_u, n2) % n2
        readable.append(not (quotient - 1) % n)
        k = int((quotient - 1) // n)
        values.append((k - n if k > n // 2 else k) / 2**32 if readable[-1] else np.nan)
    return np.array(readable), np.array(values)


def _strip_ckks(key, own, residual):
    """Subtract ``own`` from ``residual`` ciphertext by ciphertext and read the difference
    under a secret key unrelated to the session's. Returns (readable, value) per sample.

    With the label term added as a plaintext, the difference is *transparent* (its c1 is 0):
    it is the plaintext encoding itself and decrypts under any key. SEAL's ``sub`` raises
    "result ciphertext is transparent" (after writing the result into its destination, so this
    protects nothing); to read it without relying on that, the attacker first adds an encryption
    of zero under a key pair of its own: the result is not transparent and decrypts under the
    attacker's key to what the transparent difference holds.
    """
    context = key._context
    keygen = seal.KeyGenerator(context)
    attacker_public = seal.PublicKey()
    keygen.create_public_key(attacker_public)
    encryptor = seal.Encryptor(context, attacker_public)
    decryptor = seal.Decryptor(context, keygen.secret_key())
    transparent, arrays = [], []
    for c_d, c_u in zip(residual.cts, own.cts):
        difference = seal.Ciphertext()
        try:
            key._evaluator.sub(c_d, c_u, difference)
            transparent.append(difference.is_transparent())
        except RuntimeError as exc:
            if "transparent" not in str(exc):
                raise
            transparent.append(True)
        zeros, zero = seal.Plaintext(), seal.Ciphertext()
        key._encoder.encode([0.0] * key.slots, c_d.parms_id(), c_d.scale, zeros)
        encryptor.encrypt(zeros, zero)
        shifted, readable = seal.Ciphertext(), seal.Ciphertext()
        key._evaluator.add(c_d, zero, shifted)
        key._evaluator.sub(shifted, c_u, readable)
        plain = seal.Plaintext()
        decryptor.decrypt(readable, plain)
        arrays.append(np.asarray(key._encoder.decode_double(plain)))
    values = _value_slots(arrays, residual.size, residual.layout, residual.width)
    per = key.slots // residual.width
    return np.repeat(transparent, per)[: residual.size], values


def _strip_own_scores(run, passive):
    """The curious passive party's attack on every round: {round: (readable, values)}."""
    key = run.roles[passive].public_key
    sent = {
        e.round_index: m.scores
        for e, m in _messages(run.transcript, "EncryptedPartialScores", sender=passive)
    }
    got = _messages(run.transcript, "EncryptedResidual", receiver=passive)
    strip = _strip_ckks if run.plan.backend == "ckks" else _strip_paillier
    return {
        e.round_index: strip(
            key,
            key.ciphertext_from_bytes(sent[e.round_index]),
            key.ciphertext_from_bytes(m.residual),
        )
        for e, m in got
    }


@pytest.mark.parametrize("backend", BACKENDS)
def test_passive_party_cannot_strip_its_own_ciphertext(backend, small_keys):
    run = _train(passives=("retailer",), backend=backend)
    stripped = _strip_own_scores(run, "retailer")
    assert len(stripped) == 6 and not any(readable.any() for readable, _ in stripped.values())
    # the read that recovers the label term in the control is far off here
    _, values = stripped[min(stripped)]
    label_term = 2.0 - 4.0 * run.y[run.plan.batch_indices(0, 0)]
    assert not np.any(np.abs(values - label_term) < 1.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_attack_works_against_a_plaintext_add(backend, small_keys):
    # Control: the same attack reads every label when the label term is added as plaintext.
    run = _train(passives=("retailer",), active_cls=_PlainAddActiveParty, backend=backend)
    stripped = _strip_own_scores(run, "retailer")
    assert len(stripped) == 6 and all(readable.all() for readable, _ in stripped.values())
    _, values = stripped[min(stripped)]
    rows = run.plan.batch_indices(0, 0)
    # in round 1 the bank's weights are zero, so the readable term is exactly 2 - 4y
    atol = 1e-9 if backend == "paillier" else 1e-6
    np.testing.assert_allclose(values, 2.0 - 4.0 * run.y[rows], atol=atol)


# -- freshness ---------------------------------------------------------------------------------


def _ciphertext_ids(key, data):
    """One identifier per ciphertext in a serialised vector (the ciphertext itself, or for
    CKKS the digest of each SEAL ciphertext's serialisation)."""
    vector = key.ciphertext_from_bytes(data)
    if isinstance(vector, CKKSCiphertextVector):
        return [hashlib.sha256(_save(ct)).digest() for ct in vector.cts]
    return [int(c) for c in vector.values]


def _repeated_ciphertexts(transcript, key):
    """Ciphertexts sent more than once; returns (problems, number of ciphertexts seen).

    The one allowed repeat is a broadcast: the same blob in the same field of the same
    sender's messages of one round (the residual to every passive party).
    """
    fields = ("scores", "squared_sum", "residual", "later_scores", "value", "values")
    skip = {"MaskedGradientDecryption", "PublicKeyAnnouncement"}
    seen: set = set()
    sends: set = set()
    problems = []
    for entry in transcript:
        if entry.message_type in skip:
            continue
        message = REGISTRY.decode(entry.payload).message
        for field in fields:
            data = getattr(message, field, b"")
            if not isinstance(data, bytes) or not data:
                continue
            send = (entry.sender, entry.round_index, entry.message_type, field, data)
            if send in sends:  # broadcast
                continue
            sends.add(send)
            ids = set(_ciphertext_ids(key, data))
            if ids & seen:
                problems.append(f"{entry.message_type}.{field} in round {entry.round_index}")
            seen |= ids
    return problems, len(seen)


def test_no_ciphertext_is_ever_repeated(run):
    # A sanity check over every ciphertext field (the targeted freshness checks are the strip
    # attack and the cross-term and later-score tests).
    key = run.roles["retailer"].public_key
    problems, count = _repeated_ciphertexts(run.transcript, key)
    assert not problems
    n_vectors = len(_messages(run.transcript, "MaskedGradient"))
    assert count > {"paillier": 1000, "ckks": 2 * n_vectors}[run.plan.backend]
    # control: a replayed score vector (the same blob, another round) is caught
    scores = next(e for e in run.transcript if e.message_type == "EncryptedPartialScores")
    first_round = [e for e in run.transcript if e.round_index == scores.round_index]
    replay = dataclasses.replace(scores, round_index=scores.round_index + 1)
    problems, _ = _repeated_ciphertexts([*first_round, replay], key)
    assert problems == [f"EncryptedPartialScores.scores in round {replay.round_index}"]


# -- cross terms (Paillier) ------------------------------------------------------------------


class _NoRerandomizePassive(PassiveParty):
    """Flawed control: the epoch's cross term is the deterministic sum of products."""

    def _cross_term(self, cross_sum):
        return cross_sum


def _cross_terms_are_deterministic(roles, transcript, secret_key, plan, passive):
    """What the label party can compute if it guesses the passive party's scores exactly: the
    epoch's sum of products of those scores with the later scores it sent (one per epoch)."""
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
    # one cross term per epoch, in the epoch's last round
    epochs = sorted({(r - 1) // plan.batches_per_epoch for r in later})
    assert sorted(cross) == [(e + 1) * plan.batches_per_epoch for e in epochs]
    verdicts = []
    for round_index, message in cross.items():
        guess = None
        for r in range(round_index - plan.batches_per_epoch + 1, round_index + 1):
            u = secret_key.decrypt(key.ciphertext_from_bytes(scores[r].scores))
            later_vec = key.ciphertext_from_bytes(later[r].later_scores)
            product = key.dot_columns(u[:, None], later_vec)
            guess = product if guess is None else key.add(guess, product)
        assert guess is not None
        sent = key.ciphertext_from_bytes(message.value)
        verdicts.append(int(guess.values[0]) == int(sent.values[0]))
    return verdicts


def test_cross_terms_are_rerandomised(small_keys):
    run = _train(passives=("retailer", "telco"))
    verdicts = _cross_terms_are_deterministic(
        run.roles, run.transcript, run.secret_key, run.plan, "retailer"
    )
    assert verdicts and not any(verdicts)


def test_cross_term_check_catches_a_missing_rerandomisation(small_keys, monkeypatch):
    import vfl.roles

    monkeypatch.setattr(vfl.roles.PassiveParty, "_cross_term", _NoRerandomizePassive._cross_term)
    run = _train(passives=("retailer", "telco"))
    verdicts = _cross_terms_are_deterministic(
        run.roles, run.transcript, run.secret_key, run.plan, "retailer"
    )
    assert verdicts and all(verdicts)


@pytest.mark.parametrize("run", ["paillier"], indirect=True)
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
