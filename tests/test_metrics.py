"""vfl.metrics: agreement with scikit-learn on random data (with ties) and input checks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from protocols.errors import DataError
from vfl.metrics import accuracy, ks_statistic, log_loss, roc_auc

SETTINGS = settings(max_examples=150, deadline=None)


@st.composite
def labels_and_scores(draw: st.DrawFn, *, both: bool = True) -> tuple[list[int], list[float]]:
    """Binary labels (both classes when ``both``) and scores drawn from a small pool.

    Drawing scores from a pool of a few values makes ties common, which is the tricky part
    of rank and curve metrics.
    """
    n = draw(st.integers(min_value=2, max_value=60))
    labels = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    if both and len(set(labels)) < 2:
        labels[0] = 1 - labels[0]
    pool = draw(
        st.lists(
            st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
            min_size=1,
            max_size=n,
        )
    )
    scores = draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n))
    return labels, scores


@SETTINGS
@given(labels_and_scores())
def test_roc_auc_matches_sklearn(data: tuple[list[int], list[float]]) -> None:
    y, s = data
    assert roc_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)


@SETTINGS
@given(labels_and_scores())
def test_ks_matches_sklearn_roc_curve(data: tuple[list[int], list[float]]) -> None:
    y, s = data
    fpr, tpr, _ = skm.roc_curve(y, s, drop_intermediate=False)
    assert ks_statistic(y, s) == pytest.approx(float(np.max(np.abs(tpr - fpr))), abs=1e-12)


@SETTINGS
@given(
    st.integers(1, 60).flatmap(
        lambda n: st.tuples(
            st.lists(st.integers(0, 2), min_size=n, max_size=n),
            st.lists(st.integers(0, 2), min_size=n, max_size=n),
        )
    )
)
def test_accuracy_matches_sklearn(data: tuple[list[int], list[int]]) -> None:
    y, p = data
    assert accuracy(y, p) == pytest.approx(skm.accuracy_score(y, p), abs=1e-12)


@SETTINGS
@given(
    st.integers(1, 60).flatmap(
        lambda n: st.tuples(
            st.lists(st.integers(0, 1), min_size=n, max_size=n),
            st.lists(
                st.one_of(st.just(0.0), st.just(1.0), st.floats(0.0, 1.0)),
                min_size=n,
                max_size=n,
            ),
        )
    )
)
def test_log_loss_matches_sklearn(data: tuple[list[int], list[float]]) -> None:
    y, p = data
    # scikit-learn needs the label set spelled out when y_true holds a single class.
    expected = skm.log_loss(y, p, labels=[0, 1])
    assert log_loss(y, p) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_known_answers() -> None:
    # Hand-computed: of the four (positive, negative) pairs, 3 are ordered correctly.
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    assert ks_statistic([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.5
    # All scores tied: AUC is exactly one half and no threshold separates anything.
    assert roc_auc([0, 1, 0, 1], [3.0] * 4) == 0.5
    assert ks_statistic([0, 1, 0, 1], [3.0] * 4) == 0.0
    assert roc_auc([0, 1], [0.0, 1.0]) == 1.0
    assert ks_statistic([1, 0], [0.0, 1.0]) == 1.0
    assert accuracy(["a", "b"], ["a", "c"]) == 0.5
    assert log_loss([1], [1.0]) == pytest.approx(-np.log1p(-np.finfo(float).eps))
    assert np.isfinite(log_loss([1], [0.0]))


def test_accepts_bool_and_float_labels_and_pandas() -> None:
    import pandas as pd

    s = [0.2, 0.9, 0.4]
    assert roc_auc([False, True, False], s) == roc_auc([0.0, 1.0, 0.0], s) == 1.0
    assert roc_auc(pd.Series([0, 1, 0]), pd.Series(s)) == 1.0


BAD_BINARY_INPUTS: list[tuple[Any, Any]] = [
    ([], []),  # empty
    ([0, 1, 1], [0.1, 0.2]),  # different lengths
    ([[0, 1]], [[0.1, 0.2]]),  # 2-D
    ([0, 0, 0], [0.1, 0.2, 0.3]),  # a single class
    ([0, 1, 2], [0.1, 0.2, 0.3]),  # not binary
    ([0, 1, np.nan], [0.1, 0.2, 0.3]),  # NaN label
    (["no", "yes"], [0.1, 0.2]),  # string labels
    ([0, 1], [0.1, np.nan]),  # NaN score
    ([0, 1], [0.1, np.inf]),  # infinite score
    ([0, 1], ["a", "b"]),  # non-numeric scores
]


@pytest.mark.parametrize("metric", [roc_auc, ks_statistic])
@pytest.mark.parametrize(("y", "s"), BAD_BINARY_INPUTS)
def test_rank_metrics_reject_bad_input(metric: Any, y: Any, s: Any) -> None:
    with pytest.raises(DataError):
        metric(y, s)


@pytest.mark.parametrize(
    ("y", "p"),
    [
        ([], []),
        ([0, 1], [0.5]),
        ([0, 2], [0.5, 0.5]),
        ([0, 1], [0.5, 1.5]),
        ([0, 1], [-0.1, 0.5]),
        ([0, 1], [0.5, np.nan]),
        ([[0, 1]], [[0.5, 0.5]]),
    ],
)
def test_log_loss_rejects_bad_input(y: Any, p: Any) -> None:
    with pytest.raises(DataError):
        log_loss(y, p)


def test_log_loss_allows_a_single_class() -> None:
    assert log_loss([0, 0], [0.5, 0.5]) == pytest.approx(np.log(2.0))


@pytest.mark.parametrize(
    ("y", "p"),
    [
        ([], []),
        ([0, 1], [0]),
        ([[0, 1]], [[0, 1]]),
        ([0, np.nan], [0, 1]),
        ([0, 1], ["a", None]),
    ],
)
def test_accuracy_rejects_bad_input(y: Any, p: Any) -> None:
    with pytest.raises(DataError):
        accuracy(y, p)


def test_data_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        roc_auc([1, 1], [0.1, 0.2])
