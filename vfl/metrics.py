"""Binary-classification metrics for evaluating vertical models, without scikit-learn.

The label holder evaluates the model on its own labels, so these functions only need numpy. They
agree with scikit-learn's ``roc_auc_score``, ``roc_curve`` (for KS), ``accuracy_score`` and
``log_loss`` on valid input; the tests check this on random data with ties.

Labels for :func:`roc_auc`, :func:`ks_statistic` and :func:`log_loss` must be 0/1 (ints, floats
or bools). Every function raises :class:`~protocols.errors.DataError` on unusable input rather
than returning ``nan``, so a broken evaluation cannot pass silently.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from protocols.errors import DataError

__all__ = ["accuracy", "ks_statistic", "log_loss", "roc_auc"]

# Same clipping as scikit-learn's log_loss: machine epsilon of float64, so a confident wrong
# prediction costs about 36 nats instead of infinity.
_LOG_LOSS_EPS = float(np.finfo(np.float64).eps)


def _as_1d(values: Any, name: str) -> npt.NDArray[Any]:
    """Return ``values`` as a 1-D numpy array, or raise DataError."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise DataError(f"{name} must be 1-D; got an array with {array.ndim} dimension(s)")
    if array.size == 0:
        raise DataError(f"{name} is empty; expected at least one sample")
    return array


def _check_same_length(a: npt.NDArray[Any], b: npt.NDArray[Any], a_name: str, b_name: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise DataError(
            f"{a_name} and {b_name} must have the same length; got {a.shape[0]} and {b.shape[0]}"
        )


def _binary_labels(y_true: Any, *, need_both: bool) -> npt.NDArray[np.int64]:
    """Validate 0/1 labels and return them as int64."""
    array = _as_1d(y_true, "y_true")
    if array.dtype.kind == "b":
        labels = array.astype(np.int64)
    elif array.dtype.kind in "iuf":
        if not np.all(np.isfinite(array)):
            raise DataError("y_true contains NaN or infinite values; expected labels 0 and 1")
        if not np.all((array == 0) | (array == 1)):
            raise DataError("y_true must contain only the labels 0 and 1; got other values")
        labels = array.astype(np.int64)
    else:
        raise DataError(f"y_true must be numeric or boolean 0/1 labels; got dtype {array.dtype}")
    if need_both:
        n_pos = int(labels.sum())
        if n_pos == 0 or n_pos == labels.shape[0]:
            raise DataError(
                "y_true must contain both classes (0 and 1); got only "
                f"{'1' if n_pos else '0'} in {labels.shape[0]} samples"
            )
    return labels


def _finite_floats(values: Any, name: str) -> npt.NDArray[np.float64]:
    array = _as_1d(values, name)
    if array.dtype.kind not in "biuf":
        raise DataError(f"{name} must be numeric; got dtype {array.dtype}")
    floats = array.astype(np.float64)
    if not np.all(np.isfinite(floats)):
        raise DataError(f"{name} contains NaN or infinite values; expected finite numbers")
    return floats


def roc_auc(y_true: Any, scores: Any) -> float:
    """Area under the ROC curve, computed from ranks (Mann-Whitney U).

    Tied scores receive their average rank, which counts a tied (positive, negative) pair as
    half-correct, exactly like the trapezoidal ROC area.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Labels 0/1; both classes must be present.
    scores : array-like of shape (n_samples,)
        Finite scores; higher means more likely to be 1. Any monotone transform gives the same
        result, so probabilities, logits and partial linear scores all work.

    Returns
    -------
    float
        The AUC in [0, 1].

    Raises
    ------
    DataError
        If the inputs are empty, not 1-D, of different lengths, if the labels are not 0/1 or lack
        a class, or if a score is non-finite.

    Examples
    --------
    >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    labels = _binary_labels(y_true, need_both=True)
    values = _finite_floats(scores, "scores")
    _check_same_length(labels, values, "y_true", "scores")

    n = values.shape[0]
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    # Each run of equal scores shares the mean of the 1-based ranks it spans.
    run_starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    run_ends = np.r_[run_starts[1:], n]
    run_mean_rank = (run_starts + 1 + run_ends) / 2.0
    run_of_position = np.repeat(np.arange(run_starts.shape[0]), run_ends - run_starts)
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = run_mean_rank[run_of_position]

    n_pos = int(labels.sum())
    n_neg = n - n_pos
    rank_sum = float(ranks[labels == 1].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def ks_statistic(y_true: Any, scores: Any) -> float:
    """Kolmogorov-Smirnov statistic: the largest ``|TPR - FPR|`` over all score thresholds.

    Only thresholds between distinct scores are considered, so tied samples are never split.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Labels 0/1; both classes must be present.
    scores : array-like of shape (n_samples,)
        Finite scores; higher means more likely to be 1.

    Returns
    -------
    float
        The KS statistic in [0, 1].

    Raises
    ------
    DataError
        If the inputs are empty, not 1-D, of different lengths, if the labels are not 0/1 or lack
        a class, or if a score is non-finite.

    Examples
    --------
    >>> ks_statistic([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.5
    """
    labels = _binary_labels(y_true, need_both=True)
    values = _finite_floats(scores, "scores")
    _check_same_length(labels, values, "y_true", "scores")

    order = np.argsort(-values, kind="mergesort")
    ordered = values[order]
    ordered_labels = labels[order]
    # Evaluate the curve at the last sample of each run of equal scores (threshold = that score).
    run_last = np.flatnonzero(np.r_[ordered[1:] != ordered[:-1], True])
    true_pos = np.cumsum(ordered_labels)[run_last]
    false_pos = (run_last + 1) - true_pos
    tpr = true_pos / float(labels.sum())
    fpr = false_pos / float(labels.shape[0] - labels.sum())
    return float(np.max(np.abs(tpr - fpr)))


def accuracy(y_true: Any, y_pred: Any) -> float:
    """Share of predictions equal to the true labels.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True labels (any comparable values, not only 0/1).
    y_pred : array-like of shape (n_samples,)
        Predicted labels.

    Returns
    -------
    float
        Accuracy in [0, 1].

    Raises
    ------
    DataError
        If the inputs are empty, not 1-D, of different lengths, or contain missing values
        (NaN/None), which would otherwise silently count as wrong.

    Examples
    --------
    >>> accuracy([0, 1, 1, 0], [0, 1, 0, 0])
    0.75
    """
    truth = _as_1d(y_true, "y_true")
    pred = _as_1d(y_pred, "y_pred")
    _check_same_length(truth, pred, "y_true", "y_pred")
    for array, name in ((truth, "y_true"), (pred, "y_pred")):
        if bool(pd.isna(array).any()):
            raise DataError(f"{name} contains missing values (NaN/None); expected labels")
    return float(np.mean(truth == pred))


def log_loss(y_true: Any, proba: Any) -> float:
    """Mean binary cross-entropy, with probabilities clipped away from 0 and 1.

    Probabilities are clipped to ``[eps, 1 - eps]`` with ``eps`` the float64 machine epsilon
    (as scikit-learn does), so a single confident mistake gives a large but finite loss.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Labels 0/1. A single class is allowed.
    proba : array-like of shape (n_samples,)
        Predicted probability of label 1, each in [0, 1].

    Returns
    -------
    float
        The mean negative log-likelihood in nats.

    Raises
    ------
    DataError
        If the inputs are empty, not 1-D, of different lengths, if the labels are not 0/1, or if
        a probability is non-finite or outside [0, 1].

    Examples
    --------
    >>> round(log_loss([0, 1], [0.2, 0.6]), 6)
    0.366985
    """
    labels = _binary_labels(y_true, need_both=False)
    p = _finite_floats(proba, "proba")
    _check_same_length(labels, p, "y_true", "proba")
    if np.any((p < 0.0) | (p > 1.0)):
        raise DataError("proba must hold probabilities in [0, 1]; got values outside that range")
    p = np.clip(p, _LOG_LOSS_EPS, 1.0 - _LOG_LOSS_EPS)
    losses = -(labels * np.log(p) + (1 - labels) * np.log1p(-p))
    return float(np.mean(losses))
