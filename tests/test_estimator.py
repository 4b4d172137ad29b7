"""The estimator facade: bad input, persistence, prediction, scikit-learn conventions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from protocols.errors import (
    DataError,
    InsecureParametersError,
    NotFittedError,
    ParameterError,
    VFLError,
)
from tests.conftest import TEST_KEY_BITS
from tests.reference import make_blocks
from vfl import VerticalLogisticRegression


def _frames(n=300, seed=0):
    blocks, y = make_blocks(n, {"bank": 3, "retailer": 2}, seed=seed)
    frames = {k: pd.DataFrame(v).add_prefix(f"{k}_") for k, v in blocks.items()}
    ids = [f"C{i:05d}" for i in range(n)]
    for frame in frames.values():
        frame.insert(0, "id", ids)
    return frames, pd.Series(y.astype(int))


def _model(**kw):
    params = dict(key_bits=TEST_KEY_BITS, max_iter=2, batch_size=50, random_state=0)
    params.update(kw)
    return VerticalLogisticRegression(**params)


def _assert_unfitted(model):
    assert not hasattr(model, "coef_") and not hasattr(model, "models_")


def test_fit_predict_save_load_roundtrip(small_keys, tmp_path):
    frames, y = _frames()
    model = _model().fit(frames, y, label_party="bank")
    assert set(model.coef_) == {"bank", "retailer"}
    assert model.coef_["bank"].shape == (3,) and model.coef_["retailer"].shape == (2,)
    proba = model.predict_proba(frames)
    assert proba.shape == (300, 2) and np.allclose(proba.sum(axis=1), 1.0)
    # the encrypted scoring round gives the plaintext score of the fitted weights
    x = {k: model.models_[k].features(f.drop(columns="id")) for k, f in frames.items()}
    z = x["bank"] @ model.coef_["bank"] + x["retailer"] @ model.coef_["retailer"]
    expected = 1 / (1 + np.exp(-(z + model.intercept_)))
    np.testing.assert_allclose(proba[:, 1], expected, atol=1e-6)
    np.testing.assert_array_equal(model.predict(frames), (expected >= 0.5).astype(int))
    model.save(tmp_path / "m")
    assert (tmp_path / "m" / "bank" / "party.json").exists()
    assert (tmp_path / "m" / "retailer" / "party.json").exists()
    saved = "".join(p.read_text() for p in (tmp_path / "m").rglob("*.json"))
    assert "secret" not in saved.lower() and "bank_0" in saved
    loaded = VerticalLogisticRegression.load(tmp_path / "m")
    np.testing.assert_allclose(loaded.predict_proba(frames), proba, atol=1e-6)
    assert loaded.coef_["retailer"].tolist() == model.coef_["retailer"].tolist()


def test_per_party_share_holds_only_that_party(small_keys, tmp_path):
    frames, y = _frames()
    model = _model().fit(frames, y, label_party="bank")
    model.models_["retailer"].save(tmp_path)
    text = (tmp_path / "retailer" / "party.json").read_text()
    assert "bank_" not in text and "retailer_0" in text


def test_get_set_params():
    model = VerticalLogisticRegression()
    assert model.get_params()["key_bits"] == 2048
    assert model.set_params(max_iter=3).max_iter == 3
    with pytest.raises(ParameterError):
        model.set_params(nope=1)


def test_not_fitted():
    frames, _ = _frames()
    with pytest.raises(NotFittedError):
        VerticalLogisticRegression().predict_proba(frames)
    with pytest.raises(AttributeError):  # NotFittedError is also an AttributeError
        VerticalLogisticRegression().save("never-written")


def test_small_key_refused_without_switch():
    frames, y = _frames()
    model = _model()
    with pytest.raises(InsecureParametersError, match="2048"):
        model.fit(frames, y, label_party="bank")
    _assert_unfitted(model)


@pytest.mark.parametrize(
    ("mutate", "error", "match"),
    [
        (lambda f, y: (f, y.astype(str).radd("class-")), DataError, "numeric"),
        (lambda f, y: (f, y.where(y == 0, 2)), DataError, "binary"),
        (lambda f, y: (f, y * 0), DataError, "one class"),
        (lambda f, y: (f, y.iloc[:-1]), DataError, "labels"),
        (lambda f, y: ({**f, "retailer": f["retailer"][["id"]]}, y), DataError, "no feature"),
        (lambda f, y: ({**f, "retailer": f["retailer"].iloc[::-1]}, y), DataError, "aligned"),
        (lambda f, y: ({"bank": f["bank"]}, y), ParameterError, "two parties"),
        (lambda f, y: ({**f, "coordinator": f["retailer"]}, y), ParameterError, "reserved"),
    ],
)
def test_bad_input_raises_and_leaves_model_unfitted(small_keys, mutate, error, match):
    frames, y = _frames()
    frames, y = mutate(frames, y)
    model = _model()
    with pytest.raises(error, match=match):
        model.fit(frames, y, label_party="bank")
    _assert_unfitted(model)


def test_nan_in_strict_mode(small_keys):
    frames, y = _frames()
    frames["retailer"].loc[5, "retailer_1"] = np.nan
    model = _model(strict=True)
    with pytest.raises(DataError, match="retailer_1"):
        model.fit(frames, y, label_party="bank")
    _assert_unfitted(model)
    # without strict mode the value is imputed
    assert _model().fit(frames, y, label_party="bank").n_iter_ == 2


def test_unknown_label_party(small_keys):
    frames, y = _frames()
    with pytest.raises(ParameterError, match="label_party"):
        _model().fit(frames, y, label_party="telco")


@pytest.mark.parametrize("batch_size", [2, 3])
def test_label_leak_guard(small_keys, batch_size):
    frames, y = _frames(n=40)
    model = _model(batch_size=batch_size)
    with pytest.raises(ParameterError, match="reveal"):
        model.fit(frames, y, label_party="bank")
    _assert_unfitted(model)
    # with an explicit override training proceeds
    model = _model(batch_size=batch_size, allow_small_batches=True, max_iter=1)
    assert model.fit(frames, y, label_party="bank").n_iter_ == 1


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("max_iter", 0),
        ("batch_size", 0),
        ("learning_rate", -1.0),
        ("optimizer", "lbfgs"),
        ("backend", "rsa"),
        ("key_bits", 2000),
    ],
)
def test_bad_parameters(small_keys, param, value):
    frames, y = _frames()
    with pytest.raises(ParameterError):
        _model(**{param: value}).fit(frames, y, label_party="bank")


def test_all_errors_share_the_root():
    for cls in (DataError, ParameterError, InsecureParametersError, NotFittedError):
        assert issubclass(cls, VFLError)
    assert issubclass(DataError, ValueError) and issubclass(NotFittedError, AttributeError)


def test_load_rejects_missing_or_malformed(tmp_path):
    with pytest.raises(DataError, match="model.json"):
        VerticalLogisticRegression.load(tmp_path)
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(DataError):
        VerticalLogisticRegression.load(tmp_path)


def test_label_leak_guard_boundaries(small_keys):
    # bank: 3 features + the intercept = 4 gradient columns; retailer: 2
    frames, y = _frames(n=40)
    model = _model(batch_size=4)
    with pytest.raises(ParameterError, match="'bank'"):
        model.fit(frames, y, label_party="bank")
    _assert_unfitted(model)
    assert _model(batch_size=5, max_iter=1).fit(frames, y, label_party="bank").n_iter_ == 1
    # with the retailer holding labels: retailer 2 + 1 = 3 columns, bank (passive) 3 columns
    with pytest.raises(ParameterError, match="3 gradient columns"):
        _model(batch_size=3).fit(frames, y, label_party="retailer")
    assert _model(batch_size=4, max_iter=1).fit(frames, y, label_party="retailer").n_iter_ == 1


def test_missing_labels(small_keys):
    frames, y = _frames()
    y = y.astype(float)
    y.iloc[3] = np.nan
    with pytest.raises(DataError, match="missing"):
        _model().fit(frames, y, label_party="bank")


def test_predict_with_other_parties(small_keys):
    frames, y = _frames()
    model = _model().fit(frames, y, label_party="bank")
    other = {"bank": frames["bank"], "telco": frames["retailer"]}
    with pytest.raises(DataError, match="expected frames"):
        model.predict_proba(other)


def test_load_rejects_inconsistent_folders(small_keys, tmp_path):
    import json

    from vfl.model import PartyModel

    frames, y = _frames()
    _model().fit(frames, y, label_party="bank").save(tmp_path)
    with pytest.raises(DataError, match="no saved model"):
        PartyModel.load(tmp_path, "telco")
    (tmp_path / "telco").mkdir()
    (tmp_path / "telco" / "party.json").write_text((tmp_path / "bank" / "party.json").read_text())
    with pytest.raises(DataError, match="holds party"):
        PartyModel.load(tmp_path, "telco")
    manifest = json.loads((tmp_path / "model.json").read_text())
    for broken in (
        {**manifest, "label_party": "telco"},
        {**manifest, "params": {**manifest["params"], "nope": 1}},
    ):
        (tmp_path / "model.json").write_text(json.dumps(broken))
        with pytest.raises(DataError, match="malformed"):
            VerticalLogisticRegression.load(tmp_path)


def test_runner_and_transport_errors(small_keys):
    from protocols.errors import ProtocolError, TransportError
    from protocols.transport import InMemoryTransport
    from tests.reference import build_session
    from vfl.messages import REGISTRY
    from vfl.runner import run_session

    with pytest.raises(ParameterError):
        InMemoryTransport(["a", "a"])
    transport = InMemoryTransport(["a", "b"])
    with pytest.raises(TransportError):
        transport.send("a", "c", b"x", message_type="X", round_index=0)
    with pytest.raises(TransportError):
        transport.receive("c")
    blocks, labels = make_blocks(200, {"bank": 2, "retailer": 2})
    roles, plan, _ = build_session(blocks, labels, ("retailer",))
    with pytest.raises(TransportError, match="exceeded"):
        run_session(
            roles,
            (roles["c"], roles["c"].start()),
            InMemoryTransport(roles),
            REGISTRY,
            max_messages=5,
        )
    roles, plan, _ = build_session(blocks, labels, ("retailer",))
    # the coordinator's opening messages never reach the retailer: the session cannot finish
    opening = [m for m in roles["c"].start() if m.receiver != "retailer"]
    with pytest.raises(ProtocolError, match="unfinished"):
        run_session(roles, (roles["c"], opening), InMemoryTransport(roles), REGISTRY)
