"""Tests for vfl.datasets.make_bank_retailer: determinism, layout, and the retailer_uplift knob."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from protocols.errors import ParameterError
from vfl.datasets import BankRetailerData, make_bank_retailer

BANK_FEATURES = [
    "age",
    "income",
    "employment",
    "credit_limit",
    "utilisation",
    "months_on_book",
    "late_payments_12m",
    "n_products",
]
RETAILER_FEATURES = [
    "monthly_spend",
    "basket_size",
    "returns_rate",
    "online_share",
    "loyalty_tier",
    "days_since_last_purchase",
]


@pytest.fixture(scope="module")
def data() -> BankRetailerData:
    return make_bank_retailer(3000, seed=7)


def test_columns_and_dtypes(data: BankRetailerData) -> None:
    assert list(data.bank.columns) == ["id", "default", *BANK_FEATURES]
    assert list(data.retailer.columns) == ["id", *RETAILER_FEATURES]
    assert data.label_column == "default" and data.id_column == "id"
    assert data.bank["default"].dtype == np.int64
    assert set(data.bank["default"].unique()) == {0, 1}
    assert set(data.bank["employment"].unique()) <= {
        "salaried",
        "self_employed",
        "retired",
        "unemployed",
    }
    assert set(data.retailer["loyalty_tier"].unique()) == {"bronze", "silver", "gold", "platinum"}


def test_is_frozen(data: BankRetailerData) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.bank = data.retailer  # type: ignore[misc]


def test_missing_values_only_in_a_few_numeric_columns(data: BankRetailerData) -> None:
    missing = data.bank.isna().mean()
    assert set(missing[missing > 0].index) == {"income", "months_on_book"}
    assert 0.005 < missing["income"] < 0.04
    assert not data.retailer.isna().any().any()


def test_deterministic_for_a_seed() -> None:
    a = make_bank_retailer(500, overlap=0.6, retailer_uplift=0.5, seed=3)
    b = make_bank_retailer(500, overlap=0.6, retailer_uplift=0.5, seed=3)
    pd.testing.assert_frame_equal(a.bank, b.bank)
    pd.testing.assert_frame_equal(a.retailer, b.retailer)
    c = make_bank_retailer(500, overlap=0.6, retailer_uplift=0.5, seed=4)
    assert not a.bank["id"].equals(c.bank["id"])


@pytest.mark.parametrize("overlap", [0.3, 0.8, 1.0])
def test_overlap_fraction(overlap: float) -> None:
    d = make_bank_retailer(2000, overlap=overlap, seed=1)
    bank_ids, retailer_ids = set(d.bank["id"]), set(d.retailer["id"])
    union = bank_ids | retailer_ids
    assert len(union) == 2000
    assert len(bank_ids & retailer_ids) / len(union) == pytest.approx(overlap, abs=0.01)
    if overlap < 1.0:
        # Each party also holds customers the other does not.
        assert bank_ids - retailer_ids and retailer_ids - bank_ids


def test_ids_unique_and_well_formed(data: BankRetailerData) -> None:
    for frame in (data.bank, data.retailer):
        assert frame["id"].is_unique
        assert frame["id"].str.fullmatch(r"C\d{9}").all()


def test_rows_shuffled_independently(data: BankRetailerData) -> None:
    shared = set(data.bank["id"]) & set(data.retailer["id"])
    bank_order = [i for i in data.bank["id"] if i in shared]
    retailer_order = [i for i in data.retailer["id"] if i in shared]
    assert bank_order != retailer_order
    # Not sorted either: the ID order carries no information.
    assert bank_order != sorted(bank_order)


@pytest.mark.parametrize("uplift", [0.0, 1.0, 3.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_default_rate(uplift: float, seed: int) -> None:
    rate = make_bank_retailer(4000, retailer_uplift=uplift, seed=seed).bank["default"].mean()
    assert 0.15 <= rate <= 0.25


def _prepare(frame: pd.DataFrame) -> pd.DataFrame:
    """Median-impute numeric columns and one-hot the string columns (test-local, no vfl code)."""
    out = frame.copy()
    for column in out.columns:
        if pd.api.types.is_numeric_dtype(out[column]):
            out[column] = out[column].fillna(out[column].median())
    return pd.get_dummies(out, dtype=float)


def _holdout_aucs(d: BankRetailerData) -> tuple[float, float]:
    """Test AUC of a logistic regression on bank-only vs bank+retailer features."""
    joined = d.bank.merge(d.retailer, on=d.id_column)
    y = joined[d.label_column].to_numpy()
    train, test = train_test_split(
        np.arange(len(joined)), test_size=0.3, random_state=0, stratify=y
    )
    aucs = []
    for features in (BANK_FEATURES, BANK_FEATURES + RETAILER_FEATURES):
        x = _prepare(joined[features]).to_numpy()
        mean, std = x[train].mean(axis=0), x[train].std(axis=0)
        x = (x - mean) / np.where(std > 0, std, 1.0)
        model = LogisticRegression(max_iter=1000).fit(x[train], y[train])
        aucs.append(float(roc_auc_score(y[test], model.decision_function(x[test]))))
    return aucs[0], aucs[1]


def test_retailer_adds_auc_with_uplift() -> None:
    bank_auc, joint_auc = _holdout_aucs(make_bank_retailer(6000, retailer_uplift=1.0, seed=0))
    assert joint_auc - bank_auc >= 0.03


def test_retailer_adds_nothing_without_uplift() -> None:
    bank_auc, joint_auc = _holdout_aucs(make_bank_retailer(6000, retailer_uplift=0.0, seed=0))
    assert abs(joint_auc - bank_auc) < 0.01
    # The negative control still has a useful bank model and correlated parties.
    assert bank_auc > 0.7


def test_parties_features_correlate(data: BankRetailerData) -> None:
    joined = data.bank.merge(data.retailer, on="id")
    assert joined["income"].corr(joined["monthly_spend"]) > 0.3


def test_minimum_size_and_tiny_overlap() -> None:
    d = make_bank_retailer(10, overlap=0.01, seed=0)
    assert len(set(d.bank["id"]) & set(d.retailer["id"])) == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_customers": 9},
        {"n_customers": 0},
        {"n_customers": 100.0},
        {"n_customers": True},
        {"overlap": 0.0},
        {"overlap": -0.1},
        {"overlap": 1.01},
        {"overlap": float("nan")},
        {"overlap": "0.5"},
        {"retailer_uplift": -0.1},
        {"retailer_uplift": float("inf")},
        {"retailer_uplift": float("nan")},
        {"seed": 1.5},
    ],
)
def test_rejects_bad_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ParameterError):
        make_bank_retailer(**kwargs)
