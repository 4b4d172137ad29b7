"""Encrypted training equals plaintext training of the same algorithm, and lands near sklearn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from protocols.transport import InMemoryTransport
from tests.conftest import TEST_KEY_BITS
from tests.reference import build_session, make_blocks, taylor_train
from vfl import VerticalLogisticRegression
from vfl.datasets import make_bank_retailer
from vfl.messages import REGISTRY
from vfl.runner import run_session


def _run_roles(blocks, y, passives, *, optimizer, epochs, batch_size, lr, l2, seed):
    roles, _, _ = build_session(
        blocks,
        y,
        passives,
        batch_size=batch_size,
        max_iter=epochs,
        learning_rate=lr,
        l2=l2,
        optimizer=optimizer,
        seed=seed,
    )
    run_session(roles, (roles["c"], roles["c"].start()), InMemoryTransport(roles), REGISTRY)
    return roles


@pytest.mark.parametrize(
    ("passives", "optimizer"),
    [(("retailer",), "adam"), (("retailer",), "sgd"), (("retailer", "telco"), "adam")],
)
def test_encrypted_training_equals_plaintext(small_keys, passives, optimizer):
    dims = {"bank": 4, "retailer": 3, "telco": 2}
    blocks, y = make_blocks(500, {k: dims[k] for k in ("bank", *passives)}, seed=3)
    kwargs = dict(epochs=4, batch_size=100, lr=0.1, l2=0.01, seed=11)
    roles = _run_roles(blocks, y, passives, optimizer=optimizer, **kwargs)
    w, b, history = taylor_train(
        blocks,
        y,
        "bank",
        lr=kwargs["lr"],
        epochs=kwargs["epochs"],
        batch_size=kwargs["batch_size"],
        l2=kwargs["l2"],
        optimizer=optimizer,
        seed=kwargs["seed"],
    )
    for name in ("bank", *passives):
        np.testing.assert_allclose(roles[name].coef, w[name], atol=1e-6, rtol=0)
        assert np.abs(w[name]).max() > 0.05  # training moved the weights
    assert abs(roles["bank"].intercept - b) < 1e-6
    # the coordinator's decrypted aggregate loss is the Taylor loss, cross terms included
    np.testing.assert_allclose(roles["c"].history, history, atol=1e-6, rtol=0)
    assert roles["c"].n_iter == 4


def test_tol_stops_training(small_keys):
    blocks, y = make_blocks(400, {"bank": 3, "retailer": 3}, seed=5)
    frames = {k: pd.DataFrame(v).add_prefix(f"{k}_") for k, v in blocks.items()}
    model = VerticalLogisticRegression(
        key_bits=TEST_KEY_BITS,
        max_iter=30,
        batch_size=100,
        learning_rate=0.1,
        tol=1e-3,
        random_state=0,
    ).fit(frames, pd.Series(y), label_party="bank")
    assert model.converged_ and model.n_iter_ < 30
    assert abs(model.history_[-1] - model.history_[-2]) < 1e-3
    assert len(model.history_) == model.n_iter_


def _sklearn_auc(x_train, y_train, x_test, y_test):
    reference = LogisticRegression(max_iter=2000).fit(x_train, y_train)
    return roc_auc_score(y_test, reference.predict_proba(x_test)[:, 1])


def test_synthetic_auc_close_to_sklearn(small_keys):
    data = make_bank_retailer(3000, seed=1)
    import psi

    aligned = psi.align({"bank": data.bank, "retailer": data.retailer})
    y = aligned["bank"].pop("default")
    rows_train, rows_test = train_test_split(
        np.arange(len(y)), test_size=0.3, stratify=y, random_state=0
    )
    train = {k: f.iloc[rows_train].reset_index(drop=True) for k, f in aligned.items()}
    test = {k: f.iloc[rows_test].reset_index(drop=True) for k, f in aligned.items()}
    model = VerticalLogisticRegression(
        key_bits=TEST_KEY_BITS, max_iter=8, batch_size=256, learning_rate=0.05, random_state=0
    ).fit(train, y.iloc[rows_train], label_party="bank")
    federated = roc_auc_score(y.iloc[rows_test], model.predict_proba(test)[:, 1])

    # scikit-learn on the joined columns, with the same per-party preprocessing
    def joined(split):
        return np.hstack([model.models_[k].features(split[k].drop(columns="id")) for k in split])

    reference = _sklearn_auc(joined(train), y.iloc[rows_train], joined(test), y.iloc[rows_test])
    assert federated > 0.75
    assert abs(federated - reference) < 0.01


@pytest.mark.shared_data
def test_default_credit_auc_close_to_sklearn(small_keys, default_credit):
    guest, host = default_credit
    guest = guest.copy()
    y = guest.pop("y")
    # align with our own PSI, as a user would (the files hold the rows in different orders)
    import psi

    aligned = psi.align({"guest": guest, "host": host}, leader="guest")
    # back in the guest file's order, so the split is the one the data README describes
    position = pd.Series(np.arange(len(guest)), index=guest["id"])
    back = np.argsort(position.loc[aligned["guest"]["id"]].to_numpy())
    aligned = {k: f.iloc[back].reset_index(drop=True) for k, f in aligned.items()}
    labels = y.set_axis(guest["id"]).loc[aligned["guest"]["id"]].reset_index(drop=True)
    rows_train, rows_test = train_test_split(
        np.arange(len(labels)), test_size=0.3, stratify=labels, random_state=0
    )
    train = {k: f.iloc[rows_train].reset_index(drop=True) for k, f in aligned.items()}
    test = {k: f.iloc[rows_test].reset_index(drop=True) for k, f in aligned.items()}
    model = VerticalLogisticRegression(
        key_bits=TEST_KEY_BITS, max_iter=3, batch_size=1024, learning_rate=0.1, random_state=0
    ).fit(train, labels.iloc[rows_train], label_party="guest")
    federated = roc_auc_score(labels.iloc[rows_test], model.predict_proba(test)[:, 1])

    def joined(split):
        return np.hstack([split[k].drop(columns="id").to_numpy() for k in ("guest", "host")])

    reference = _sklearn_auc(
        joined(train), labels.iloc[rows_train], joined(test), labels.iloc[rows_test]
    )
    assert abs(reference - 0.717) < 0.005  # shared/data/default_credit/README.md's figure
    assert abs(federated - reference) < 0.01
