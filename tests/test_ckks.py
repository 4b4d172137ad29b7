"""CKKS: training parity with plaintext and with Paillier, and what its public key carries."""

from __future__ import annotations

import math
import struct

import numpy as np
import pandas as pd
import pytest
import tenseal.sealapi as seal

from protocols.backend import SecretKey
from protocols.ckks import CKKSBackend, CKKSPublicKey
from protocols.errors import DecryptionError, LocalProtocolError
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


def _loss_like(pk, rng):
    """An epoch loss as the active party builds it: two batches' products plus two scalars."""
    scores = [rng.normal(size=300), rng.normal(size=280)]
    coefficients = [rng.normal(size=300), rng.normal(size=280)]
    total = None
    for u, c in zip(scores, coefficients):
        product = pk.dot_columns(c[:, None], pk.encrypt(u))
        total = product if total is None else pk.add(total, product)
    squares, own = 7.25, -3.5
    total = pk.add(pk.add(total, pk.encrypt([squares])), pk.encrypt([own]))
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


def test_a_prepared_loss_shows_nothing_but_its_value(monkeypatch):
    # What the coordinator can read from the loss it decrypts: every slot is blinded, and the
    # block sums are the loss (column 0) and zeros: neither a batch's partial sums nor the
    # passive parties' squared sums appear on their own.
    sk = CKKSBackend().generate_secret_key(0, vector_width=4)
    pk = sk.public_key
    total, value, scalars = _loss_like(pk, np.random.default_rng(5))
    slots = _every_slot(sk, pk.prepare_decryption(total))
    assert np.mean(np.abs(slots) < 2.0**24) < 0.01
    np.testing.assert_allclose(_block_sums(pk, slots), [value, 0, 0, 0], atol=1e-3)
    # control 1: unblinded, the same slots show the products' partial sums
    raw = _every_slot(sk, total)
    assert np.mean(np.abs(raw) < 2.0**24) > 0.5

    # control 2: adding a replicated scalar as it is (lifted by ones, not the unit vector)
    # puts the scalars alone in columns 1.. of the block sums, and the check sees it
    def lift_by_ones(self, a):
        if a.layout == "u":
            return a
        ct = self._times_ones(a.cts[0])
        return self._wrap([ct], 1, "u", a.depth + 1, a.bound)

    monkeypatch.setattr(CKKSPublicKey, "_unreduced", lift_by_ones)
    leaky, _, _ = _loss_like(pk, np.random.default_rng(5))
    sums = _block_sums(pk, _every_slot(sk, pk.prepare_decryption(leaky)))
    np.testing.assert_allclose(sums[1:], scalars, atol=1e-3)


def test_masks_hide_every_slot_the_coordinator_decrypts():
    # Replicated vectors: every copy of value i (its block) gets one mask, or the coordinator
    # could average the copies. Unreduced products: every slot blinded, the block sums masked.
    sk = CKKSBackend().generate_secret_key(0, vector_width=4)
    pk = sk.public_key
    x = np.arange(10.0)
    masked, mask = pk.mask(pk.encrypt(x))
    blocks = _every_slot(sk, masked).reshape(-1, pk.width)[: x.size]
    assert np.allclose(blocks, blocks[:, :1], rtol=0, atol=1e-2)  # one mask per block
    assert np.min(np.abs(blocks[:, 0] - x)) > 1e3
    np.testing.assert_allclose(pk.unmask(sk.decrypt_masked(masked), mask), x, atol=2e-3)
    matrix = np.ones((10, 3))
    product = pk.dot_columns(matrix, pk.encrypt(x))
    masked, mask = pk.mask(product)
    slots = _every_slot(sk, masked)
    assert np.mean(np.abs(slots) < 2.0**24) < 0.01
    assert np.min(np.abs(_block_sums(pk, slots)[:3] - matrix.T @ x)) > 1e3
    np.testing.assert_allclose(pk.unmask(sk.decrypt_masked(masked), mask), matrix.T @ x, atol=2e-3)
    with pytest.raises(LocalProtocolError):  # masked vectors are final
        pk.add(masked, masked)


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
