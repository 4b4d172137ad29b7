"""Plaintext baselines: the same algorithm as the federated model, on pooled columns.

Used by the demo and ``vfl train`` to show what the federation buys (label party alone vs all
parties) and what encryption costs (centralised plaintext training of the same algorithm: same
mini-batches, Taylor residual, optimizer and penalty).
"""

from __future__ import annotations

import numpy as np

from vfl.metrics import accuracy, ks_statistic, roc_auc
from vfl.optim import make_optimizer
from vfl.plan import minibatches

__all__ = ["train_plaintext", "predict_plaintext", "evaluate"]


def train_plaintext(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    learning_rate: float,
    max_iter: int,
    batch_size: int,
    l2: float,
    optimizer: str,
    tol: float,
    seed: int,
) -> tuple[np.ndarray, float, int]:
    """Taylor-1 logistic regression in numpy. Returns ``(coef, intercept, n_iter)``."""
    x = np.hstack([np.asarray(features, dtype=np.float64), np.ones((len(features), 1))])
    y = np.asarray(labels, dtype=np.float64)
    weights = np.zeros(x.shape[1])
    penalty_mask = np.ones_like(weights)
    penalty_mask[-1] = 0.0
    opt = make_optimizer(optimizer, learning_rate)
    history: list[float] = []
    n_iter = 0
    for epoch in range(max_iter):
        losses, sizes = [], []
        for rows in minibatches(seed, len(y), batch_size, epoch):
            z = x[rows] @ weights
            residual = z / 4.0 + 0.5 - y[rows]
            signed = 2.0 * y[rows] - 1.0
            losses.append(float(np.mean(np.log(2.0) - signed * z / 2.0 + z * z / 8.0)))
            sizes.append(rows.size)
            gradient = x[rows].T @ residual / rows.size + l2 * weights * penalty_mask
            weights = opt.step(weights, gradient)
        history.append(float(np.average(losses, weights=sizes)))
        n_iter = epoch + 1
        if len(history) > 1 and abs(history[-2] - history[-1]) < tol:
            break
    return weights[:-1], float(weights[-1]), n_iter


def predict_plaintext(features: np.ndarray, coef: np.ndarray, intercept: float) -> np.ndarray:
    z = np.asarray(features, dtype=np.float64) @ coef + intercept
    return 1.0 / (1.0 + np.exp(-np.clip(z, -500, 500)))


def evaluate(labels: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """AUC, KS and accuracy (threshold 0.5) of predicted probabilities."""
    labels = np.asarray(labels)
    return {
        "auc": roc_auc(labels, proba),
        "ks": ks_statistic(labels, proba),
        "accuracy": accuracy(labels, (np.asarray(proba) >= 0.5).astype(int)),
    }
