"""The whole chain in one call: PSI, split, local preprocessing, federated training, evaluation.

Shared by ``vfl demo`` and ``vfl train``; notebooks may call :func:`run_pipeline` directly.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

import psi
from protocols.errors import DataError, ParameterError
from vfl.baselines import evaluate, predict_plaintext, train_plaintext
from vfl.estimator import VerticalLogisticRegression

__all__ = ["run_pipeline", "format_report"]


def _split(n_rows: int, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not 0.0 < test_size < 1.0:
        raise ParameterError(f"test_size must be between 0 and 1, got {test_size}")
    order = np.random.default_rng(seed).permutation(n_rows)
    n_test = round(n_rows * test_size)
    if n_test < 1 or n_test >= n_rows:
        raise DataError(f"{n_rows} aligned rows are too few for test_size={test_size}")
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def run_pipeline(
    frames: Mapping[str, pd.DataFrame],
    *,
    label_party: str,
    label_column: str,
    id_column: str = "id",
    test_size: float = 0.3,
    seed: int = 0,
    verbose: bool = False,
    **model_params: Any,
) -> dict[str, Any]:
    """Align, train and evaluate; returns the report dictionary.

    ``model_params`` go to :class:`~vfl.VerticalLogisticRegression` (``backend``, ``key_bits``,
    ``max_iter`` ...). Baselines are plaintext runs of the same algorithm on the same rows: the
    label party alone, and all columns pooled (what a centralised model would reach).
    """
    if label_party not in frames:
        raise ParameterError(f"label party {label_party!r} is not among {sorted(frames)}")
    if label_column not in frames[label_party].columns:
        raise DataError(f"label party {label_party!r} has no column {label_column!r}")
    for name, frame in frames.items():
        if name != label_party and label_column in frame.columns:
            raise DataError(f"party {name!r} also has a {label_column!r} column; drop it first")
    started = time.perf_counter()
    aligned = psi.align(dict(frames), id_column=id_column, leader=label_party)
    psi_seconds = time.perf_counter() - started
    labels = aligned[label_party][label_column]
    features = {
        name: frame.drop(columns=[label_column]) if name == label_party else frame
        for name, frame in aligned.items()
    }
    n_aligned = len(labels)
    train_rows, test_rows = _split(n_aligned, test_size, seed)

    def take(rows: np.ndarray) -> dict[str, pd.DataFrame]:
        return {name: f.iloc[rows].reset_index(drop=True) for name, f in features.items()}

    train, test = take(train_rows), take(test_rows)
    y_train = labels.iloc[train_rows].reset_index(drop=True)
    y_test = labels.iloc[test_rows].reset_index(drop=True)
    model = VerticalLogisticRegression(random_state=seed, verbose=verbose, **model_params)
    model.fit(train, y_train, label_party=label_party)
    y_test_values = y_test.to_numpy(dtype=np.float64)
    if len(np.unique(y_test_values)) < 2:
        raise DataError("the test split holds only one class; use more rows or another seed")
    federated = evaluate(y_test_values, model.predict_proba(test)[:, 1])

    # Baselines: the same preprocessing (fitted on training rows by each party) and algorithm.
    def matrices(split: dict[str, pd.DataFrame]) -> dict[str, np.ndarray]:
        return {
            name: model.models_[name].features(f.drop(columns=[id_column], errors="ignore"))
            for name, f in split.items()
        }

    train_x, test_x = matrices(train), matrices(test)
    params = model.get_params()
    algo = {
        key: params[key]
        for key in ("learning_rate", "max_iter", "batch_size", "l2", "optimizer", "tol")
    }
    y_train_values = y_train.to_numpy(dtype=np.float64)
    order = [label_party] + [p for p in features if p != label_party]

    def baseline(names: list[str]) -> dict[str, float]:
        x_tr = np.hstack([train_x[n] for n in names])
        x_te = np.hstack([test_x[n] for n in names])
        t0 = time.perf_counter()
        coef, intercept, n_iter = train_plaintext(x_tr, y_train_values, seed=seed, **algo)
        per_epoch = (time.perf_counter() - t0) / max(1, n_iter)
        result = evaluate(y_test_values, predict_plaintext(x_te, coef, intercept))
        result["seconds_per_epoch"] = per_epoch
        result["n_iter"] = n_iter
        return result

    return {
        "n_aligned": n_aligned,
        "n_train": int(train_rows.size),
        "n_test": int(test_rows.size),
        "parties": {
            name: int(f.shape[1]) - (1 if id_column in f.columns else 0)
            for name, f in features.items()
        },
        "label_party": label_party,
        "backend": model.backend,
        "key_bits": model.key_bits_,
        "auc": federated["auc"],
        "ks": federated["ks"],
        "accuracy": federated["accuracy"],
        "n_iter": model.n_iter_,
        "converged": model.converged_,
        "seconds_per_epoch": model.seconds_per_epoch_,
        "psi_seconds": psi_seconds,
        "loss_history": model.history_,
        "bytes_exchanged": int(sum(e.size_bytes for e in model.transcript_)),
        "label_party_only": baseline([label_party]),
        "centralized": baseline(order),
    }


def _key_label(report: Mapping[str, Any]) -> str:
    if report["backend"] == "ckks":
        return f"N={report['key_bits']}"
    return f"{report['key_bits']}-bit"


def format_report(report: Mapping[str, Any]) -> str:
    """A small table of the three models for the terminal."""
    label = report["label_party"]
    rows = [
        (
            f"federated ({report['backend']}, {_key_label(report)})",
            report,
            report["seconds_per_epoch"],
        ),
        (
            f"{label} only (plaintext)",
            report["label_party_only"],
            report["label_party_only"]["seconds_per_epoch"],
        ),
        (
            "centralized (plaintext)",
            report["centralized"],
            report["centralized"]["seconds_per_epoch"],
        ),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [
        f"aligned rows: {report['n_aligned']} (train {report['n_train']}, "
        f"test {report['n_test']}); epochs: {report['n_iter']}; "
        f"PSI {report['psi_seconds']:.1f} s; "
        f"{report['bytes_exchanged'] / 1e6:.1f} MB exchanged in training",
        f"{'model':<{width}}  {'AUC':>6}  {'KS':>6}  {'accuracy':>8}  {'s/epoch':>8}",
    ]
    for name, metrics, per_epoch in rows:
        lines.append(
            f"{name:<{width}}  {metrics['auc']:6.4f}  {metrics['ks']:6.4f}  "
            f"{metrics['accuracy']:8.4f}  {per_epoch:8.4f}"
        )
    return "\n".join(lines)
