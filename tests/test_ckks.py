"""CKKS: training parity with plaintext and with Paillier, and what its public key carries."""

from __future__ import annotations

import contextlib
import math
import struct
import time

import numpy as np
import pandas as pd
import pytest
import tenseal.sealapi as seal

from protocols.backend import SecretKey
from protocols.ckks import CKKSBackend, CKKSPublicKey, _load, _save
from protocols.errors import DecryptionError, LocalProtocolError, RemoteProtocolError
from protocols.transport import InMemoryTransport
from tests.reference import build_session, make_blocks, taylor_train
from vfl import VerticalLogisticRegression
from vfl.messages import REGISTRY, PublicKeyAnnouncement
from vfl.runner import run_session


def _train(backend, blocks, y, passives, **plan):
    roles, _, _ = build_session(blocks, y, passives, backend=backend, **plan)
    transport = InMemoryTransport(roles, keep_payloads=True)
    run_session(roles, (roles["c"], roles["c"].start()), transport, REGISTRY)
    return roles, transport.transcript


@pytest.mark.parametrize("passives", [("retailer",), ("retailer", "telco")])
def test_ckks_training_matches_plaintext_and_paillier(small_keys, passives):
    dims = {"bank": 4, "retailer": 3, "telco": 2}
    blocks, y = make_blocks(600, {k: dims[k] for k in ("bank", *passives)}, seed=3)
    plan = dict(batch_size=120, max_iter=4, learning_rate=0.1, l2=0.01, seed=11)
    ckks, _ = _train("ckks", blocks, y, passives, **plan)
    paillier, _ = _train("paillier", blocks, y, passives, **plan)
    w, b, history = taylor_train(
        blocks, y, "bank", lr=0.1, epochs=4, batch_size=120, l2=0.01, optimizer="adam", seed=11
    )
    for name in ("bank", *passives):
        np.testing.assert_allclose(ckks[name].coef, w[name], atol=1e-4, rtol=0)
        np.testing.assert_allclose(ckks[name].coef, paillier[name].coef, atol=1e-4, rtol=0)
    assert abs(ckks["bank"].intercept - b) < 1e-4
    np.testing.assert_allclose(ckks["c"].history, history, atol=1e-4, rtol=0)


@pytest.mark.shared_data
def test_ckks_default_credit_parity(small_keys, default_credit):
    guest, host = default_credit
    host = host.set_index("id").loc[guest["id"]].reset_index()
    y = guest["y"]
    frames = {"guest": guest.drop(columns="y"), "host": host}
    params = dict(max_iter=2, batch_size=1024, learning_rate=0.1, random_state=0)
    ckks = VerticalLogisticRegression(backend="ckks", **params).fit(frames, y, "guest")
    paillier = VerticalLogisticRegression(backend="paillier", key_bits=512, **params).fit(
        frames, y, "guest"
    )
    for party in ("guest", "host"):
        np.testing.assert_allclose(ckks.coef_[party], paillier.coef_[party], atol=1e-4, rtol=0)
    # scores are released with the 2^-12 flooding at the 2^40 mask scale and are not divided
    # by 4m like gradients: probabilities agree to about 1e-4, asserted at 1e-3
    proba = ckks.predict_proba({k: f.iloc[:500] for k, f in frames.items()})[:, 1]
    np.testing.assert_allclose(
        proba,
        paillier.predict_proba({k: f.iloc[:500] for k, f in frames.items()})[:, 1],
        atol=1e-3,
    )


def test_only_public_material_leaves_the_coordinator():
    blocks, y = make_blocks(300, {"bank": 3, "retailer": 2})
    roles, transcript = _train("ckks", blocks, y, ("retailer",), max_iter=1)
    announcement = next(e for e in transcript if e.message_type == "PublicKeyAnnouncement")
    message = REGISTRY.decode(announcement.payload).message
    assert isinstance(message, PublicKeyAnnouncement)
    data = message.public_key
    # header, then exactly two length-prefixed blobs (parameters, public key) that the key
    # keeps as they came: nothing else rides along, no evaluation keys are needed
    offset = 7
    blobs = []
    for _ in range(2):
        (length,) = struct.unpack_from(">I", data, offset)
        blobs.append(data[offset + 4 : offset + 4 + length])
        offset += 4 + length
    assert offset == len(data) and len(data) < 1_000_000
    key = CKKSPublicKey.from_bytes(data)
    assert key._raw == tuple(blobs)
    for attr in vars(key).values():
        assert not isinstance(attr, (seal.SecretKey, seal.Decryptor, SecretKey))
    # parties hold decoded public keys only
    for name in ("bank", "retailer"):
        assert not any(
            isinstance(v, (seal.SecretKey, seal.Decryptor, SecretKey))
            for v in vars(roles[name]).values()
        )
        assert not any(
            isinstance(v, (seal.SecretKey, seal.Decryptor))
            for v in vars(roles[name].public_key).values()
        )


def test_precision_budget_is_enforced():
    pk = CKKSBackend().generate_secret_key(0, vector_width=4).public_key
    with pytest.raises(ValueError, match="magnitude"):
        pk.encrypt([1e7])
    big = pk.encrypt(np.full(512, 1e6))
    with pytest.raises(ValueError, match="precision budget"):
        pk.dot_columns(np.full((512, 4), 1e4), big)
    # totals are spread over the 1024 blocks: 1e7 is fine, 2^45 is not
    assert pk.encrypt_total(1e7).size == 1
    with pytest.raises(ValueError, match="precision budget"):
        pk.encrypt_total(2.0**45)


def _loss_like(pk, rng, scalar=None):
    """An epoch loss as the active party builds it: two batches' products plus two totals
    (``scalar`` adds them another way, for controls)."""
    scores = [rng.normal(size=300), rng.normal(size=280)]
    coefficients = [rng.normal(size=300), rng.normal(size=280)]
    total = None
    for u, c in zip(scores, coefficients):
        product = pk.dot_columns(c[:, None], pk.encrypt(u))
        total = product if total is None else pk.add(total, product)
    squares, own = 7.25e6, -3.5  # an epoch's squared sum can be large
    encrypt = scalar or pk.encrypt_total
    total = pk.add(pk.add(total, encrypt(squares)), encrypt(own))
    value = sum(float(c @ u) for u, c in zip(scores, coefficients)) + squares + own
    return total, value, squares + own


def _every_slot(sk, vector):
    """What a coordinator holding ``sk`` can read from a ciphertext: every slot."""
    out = []
    for ct in vector.cts:
        plain = seal.Plaintext()
        sk._decryptor.decrypt(ct, plain)
        out.append(np.asarray(sk.public_key._encoder.decode_double(plain)))
    return np.concatenate(out)


def test_products_stay_unreduced_until_prepared():
    sk = CKKSBackend().generate_secret_key(0, vector_width=4)
    pk = sk.public_key
    total, value, _ = _loss_like(pk, np.random.default_rng(3))
    with pytest.raises(DecryptionError, match="unreduced"):
        sk.decrypt(total)
    sent = pk.ciphertext_from_bytes(pk.ciphertext_to_bytes(total), depth=1)
    with pytest.raises(DecryptionError, match="unreduced"):
        sk.decrypt(sent)  # the layout travels with the ciphertext
    np.testing.assert_allclose(sk.decrypt(pk.prepare_decryption(sent)), [value], atol=1e-3)


def _block_sums(pk, slots):
    blocks = slots[: pk._per * pk.width].reshape(pk._per, pk.width)
    return np.array([math.fsum(blocks[:, j]) for j in range(pk.width)])


def _every_slot_hidden(blinded, bare):
    """Each slot the coordinator decrypts differs from the bare (unblinded) one: blinds are
    uniform of size about 2^33, so one within 0.01 of zero has probability about 2^-40."""
    return bool(np.all(np.abs(blinded - bare) > 1e-2))


def _bare_block_zero(original):
    """Control: blinds that leave block 0 bare (moved onto block 1: the sums are unchanged)."""

    def blinds(self, rho):
        slots, sums = original(self, rho)
        slots[self.width : 2 * self.width] += slots[: self.width]
        slots[: self.width] = 0.0
        return slots, sums

    return blinds


def test_a_prepared_loss_shows_nothing_but_its_value(monkeypatch):
    # What the coordinator can read from the loss it decrypts: every slot is blinded (the tail
    # slots past the last whole block too: width 14 leaves 8), and the block sums are the loss
    # (column 0) and zeros. No batch's partial sum, no party's squared sum shows on its own.
    sk = CKKSBackend().generate_secret_key(0, vector_width=14)
    pk = sk.public_key
    total, value, scalars = _loss_like(pk, np.random.default_rng(5))
    assert pk.slots % pk.width
    bare = _every_slot(sk, total)
    slots = _every_slot(sk, pk.prepare_decryption(total))
    assert _every_slot_hidden(slots, bare)
    np.testing.assert_allclose(_block_sums(pk, slots), [value] + [0] * 13, atol=1e-3)
    # totals are spread over the blocks: no slot of the bare vector holds them alone
    assert np.max(np.abs(bare)) < abs(scalars) / 100
    # control 1: blinds that leave one block bare are caught
    monkeypatch.setattr(CKKSPublicKey, "_blinds", _bare_block_zero(CKKSPublicKey._blinds))
    assert not _every_slot_hidden(_every_slot(sk, pk.prepare_decryption(total)), bare)
    monkeypatch.undo()

    # control 2: replicated scalars lifted by ones (not the unit vector) land in columns 1..
    # of the block sums as well; with the unit vector they do not
    def lift_by_ones(self, a):
        if a.layout == "u":
            return a
        ct = self._times_ones(a.cts[0])
        return self._wrap([ct], 1, "u", a.depth + 1, a.bound)

    small, _, small_scalars = _loss_like(
        pk, np.random.default_rng(5), scalar=lambda v: pk.encrypt([v / 1e6])
    )
    sums = _block_sums(pk, _every_slot(sk, pk.prepare_decryption(small)))
    np.testing.assert_allclose(sums[1:], 0.0, atol=1e-3)
    monkeypatch.setattr(CKKSPublicKey, "_unreduced", lift_by_ones)
    leaky, _, _ = _loss_like(pk, np.random.default_rng(5), scalar=lambda v: pk.encrypt([v / 1e6]))
    sums = _block_sums(pk, _every_slot(sk, pk.prepare_decryption(leaky)))
    assert np.all(np.abs(sums[1:]) > 1.0)


def test_masks_hide_every_slot_the_coordinator_decrypts(monkeypatch):
    # Replicated vectors: every copy of value i (its block) gets one mask, or the coordinator
    # could average the copies. Unreduced products: every slot blinded, the block sums masked.
    sk = CKKSBackend().generate_secret_key(0, vector_width=14)
    pk = sk.public_key
    x = np.arange(10.0)
    masked, mask = pk.mask(pk.encrypt(x))
    blocks = _every_slot(sk, masked)[: pk.slots // pk.width * pk.width]
    blocks = blocks.reshape(-1, pk.width)[: x.size]
    assert np.allclose(blocks, blocks[:, :1], rtol=0, atol=1e-2)  # one mask per block
    assert np.min(np.abs(blocks[:, 0] - x)) > 1e3
    np.testing.assert_allclose(pk.unmask(sk.decrypt_masked(masked), mask), x, atol=2e-3)
    matrix = np.ones((10, 3))
    product = pk.dot_columns(matrix, pk.encrypt(x))
    bare = _every_slot(sk, product)
    masked, mask = pk.mask(product)
    slots = _every_slot(sk, masked)
    assert _every_slot_hidden(slots, bare)
    assert np.min(np.abs(_block_sums(pk, slots)[:3] - matrix.T @ x)) > 1e3
    np.testing.assert_allclose(pk.unmask(sk.decrypt_masked(masked), mask), matrix.T @ x, atol=2e-3)
    with pytest.raises(LocalProtocolError):  # masked vectors are final
        pk.add(masked, masked)
    # control: a mask that leaves one block bare is caught
    monkeypatch.setattr(CKKSPublicKey, "_blinds", _bare_block_zero(CKKSPublicKey._blinds))
    assert not _every_slot_hidden(_every_slot(sk, pk.mask(product)[0]), bare)


def test_each_stored_zero_is_used_once():
    # Two encryptions that share an encryption of zero differ by a transparent ciphertext (its
    # plaintext readable under any key). Encryptions drawn from the worker pool's store never do.
    from protocols.paillier import parallelism

    sk = CKKSBackend().generate_secret_key(0, vector_width=4)
    pk = sk.public_key

    def shares_a_zero(a, b):
        out = seal.Ciphertext()
        with contextlib.suppress(ValueError, RuntimeError):  # SEAL complains after writing
            pk._evaluator.sub(a, b, out)
        return out.is_transparent()

    with parallelism(2):
        pk.precompute_zeros(16)
        deadline = time.monotonic() + 60
        while pk.zeros_available < 16 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pk.zeros_available >= 16
        served = []
        take = pk._zeros.take

        def counting_take(depth):
            blob = take(depth)
            served.append(blob is not None)
            return blob

        pk._zeros.take = counting_take
        cts = [pk._encrypt_slots(np.full(pk.slots, float(i)), 0) for i in range(16)]
        del pk._zeros.take
    assert served == [True] * 16  # every one of them came from the store
    assert not any(shares_a_zero(a, b) for i, a in enumerate(cts) for b in cts[i + 1 :])
    # control: the check sees a shared zero
    blob = _save(pk._zero(0))
    twins = []
    for value in (1.0, 2.0):
        ct = seal.Ciphertext()
        _load(ct, pk._context, blob, "zero")
        ct.scale = pk._scale(0)
        pk._evaluator.add_plain_inplace(
            ct, pk._encode(np.full(pk.slots, value), ct.parms_id(), ct.scale)
        )
        twins.append(ct)
    assert shares_a_zero(*twins)


def test_coordinator_refuses_an_unblinded_gradient_before_changing_state():
    # A packed gradient sent without its mask would show the coordinator partial sums; the
    # coordinator decrypts on receipt, so the refusal is the sender's protocol error.
    from protocols.wire import Envelope
    from tests.test_roles import _same, _snapshot
    from vfl.messages import MaskedGradient

    blocks, y = make_blocks(300, {"bank": 3, "retailer": 2})
    roles, plan, _ = build_session(blocks, y, ("retailer",), backend="ckks")
    coordinator = roles["c"]
    coordinator.start()
    key = coordinator.public_key
    rows = plan.batch_indices(0, 0)
    design = np.hstack([blocks["bank"][rows], np.ones((rows.size, 1))])  # with the intercept
    padded = key.dot_columns(design, key.encrypt(np.ones(rows.size)))
    assert padded.size == plan.gradient_size("bank")
    before = _snapshot(coordinator)
    forged = MaskedGradient(values=key.ciphertext_to_bytes(padded))
    with pytest.raises(RemoteProtocolError, match="'bank'.*cannot have layout 'u'"):
        coordinator.handle("bank", Envelope(coordinator.session_id, 1, forged))
    assert _same(before, _snapshot(coordinator))
    # the genuine (masked) gradient is accepted afterwards
    genuine = MaskedGradient(values=key.ciphertext_to_bytes(key.mask(padded)[0]))
    assert coordinator.handle("bank", Envelope(coordinator.session_id, 1, genuine)) == []


def test_estimator_with_ckks_end_to_end():
    blocks, y = make_blocks(400, {"bank": 3, "retailer": 2}, seed=1)
    frames = {k: pd.DataFrame(v).add_prefix(f"{k}_") for k, v in blocks.items()}
    model = VerticalLogisticRegression(backend="ckks", max_iter=3, batch_size=100, random_state=0)
    model.fit(frames, pd.Series(y), label_party="bank")
    assert model.key_bits_ == 8192 and model.n_iter_ == 3
    proba = model.predict_proba(frames)[:, 1]
    x = {k: model.models_[k].features(f) for k, f in frames.items()}
    z = sum(x[k] @ model.coef_[k] for k in x) + model.intercept_
    np.testing.assert_allclose(proba, 1 / (1 + np.exp(-z)), atol=1e-3)


def test_a_short_blob_cannot_borrow_an_earlier_blobs_bytes():
    # Blobs reach SEAL through one reused scratch file: a blob cut short (its SEAL header still
    # claiming the full size) must fail, not be completed from what the previous load left.
    sk = CKKSBackend().generate_secret_key(0, vector_width=4)
    pk = sk.public_key
    data = pk.ciphertext_to_bytes(pk.encrypt(np.arange(8.0)))
    header = struct.calcsize(">2sBcHIBHd8s")
    (length,) = struct.unpack_from(">I", data, header)
    cut = length - 1000
    short = data[:header] + struct.pack(">I", cut) + data[header + 4 : header + 4 + cut]
    pk.ciphertext_from_bytes(data)  # leaves a full blob in the scratch file
    with pytest.raises(RemoteProtocolError):
        pk.ciphertext_from_bytes(short)
    # control: the intact bytes still load and decrypt
    np.testing.assert_allclose(
        sk.decrypt(pk.ciphertext_from_bytes(data)), np.arange(8.0), atol=1e-3
    )


def test_received_vectors_of_the_wrong_form_are_refused_on_receipt():
    # Each protocol field has one form (encrypted vector, total, masked, prepared); a vector of
    # another form is the sender's protocol error when it arrives, not a failure later.
    sk = CKKSBackend().generate_secret_key(0, vector_width=4)
    pk = sk.public_key
    product = pk.dot_columns(np.ones((10, 2)), pk.encrypt(np.arange(10.0)))
    forms = {
        "vector": pk.encrypt(np.arange(3.0)),
        "total": pk.encrypt_total(5.0),
        "masked": pk.mask(product)[0],
        "prepared": pk.prepare_decryption(product),
    }
    accepted = {
        "vector": {"vector", "masked", "prepared"},  # a replicated vector may be masked
        "total": {"total"},
        "masked": {"masked", "prepared"},  # masked and prepared unreduced vectors are blinded
        "prepared": {"masked", "prepared"},
    }
    for made, vector in forms.items():
        data = pk.ciphertext_to_bytes(vector)
        for kind in forms:
            if kind in accepted[made]:
                pk.ciphertext_from_bytes(data, kind=kind)
            else:
                with pytest.raises(RemoteProtocolError, match="cannot have layout"):
                    pk.ciphertext_from_bytes(data, kind=kind)
    with pytest.raises(LocalProtocolError):
        pk.ciphertext_from_bytes(pk.ciphertext_to_bytes(forms["total"]), kind="loss")


def test_a_squared_sum_of_the_wrong_form_is_the_senders_error():
    from protocols.wire import Envelope
    from tests.test_roles import _same, _snapshot
    from vfl.messages import EncryptedPartialScores

    blocks, y = make_blocks(300, {"bank": 3, "retailer": 2, "telco": 2})
    roles, plan, _ = build_session(blocks, y, ("retailer", "telco"), backend="ckks", batch_size=300)
    coordinator, bank = roles["c"], roles["bank"]
    for item in coordinator.start():
        if item.receiver == "bank":
            bank.handle("c", Envelope(coordinator.session_id, item.round_index, item.message))
    assert plan.batches_per_epoch == 1  # the only batch closes the epoch: squared sums due
    key = bank.public_key
    rows = plan.batch_indices(0, 0)
    wrong = EncryptedPartialScores(
        scores=key.ciphertext_to_bytes(key.encrypt(np.zeros(rows.size))),
        squared_sum=key.ciphertext_to_bytes(key.encrypt([5.0])),  # a vector, not a total
    )
    before = _snapshot(bank)
    with pytest.raises(RemoteProtocolError, match="'retailer'.*cannot have layout"):
        bank.handle("retailer", Envelope(coordinator.session_id, 1, wrong))
    assert _same(before, _snapshot(bank))


def test_shutting_the_pool_down_is_final_while_refills_land():
    # A refill that lands while the pool shuts down must not start a new pool.
    from protocols import _paillier_pool
    from protocols.paillier import parallelism, shutdown_workers

    pk = CKKSBackend().generate_secret_key(0, vector_width=4).public_key
    with parallelism(2):
        pk.precompute_zeros(64)  # keeps a worker busy refilling
        time.sleep(0.2)
        shutdown_workers()
        time.sleep(1.5)  # any chained refill has landed by now
        assert _paillier_pool._pool is None
        pk.precompute_zeros(4)  # a foreground request starts the pool again
        assert _paillier_pool._pool is not None
    shutdown_workers()
