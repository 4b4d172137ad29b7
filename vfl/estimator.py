"""``VerticalLogisticRegression``: the scikit-learn-like facade over the three roles.

The facade runs every role in this process over an in-memory transport (a simulation of a
federation, for demos, notebooks and tests). Each role still holds only its own data and key:
the coordinator gets no features or labels, passive parties get no labels, and every message
crosses as bytes. In a deployment each organisation runs only its own role.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from protocols import get_backend
from protocols.errors import DataError, NotFittedError, ParameterError
from protocols.paillier import parallelism as paillier_parallelism
from protocols.transport import InMemoryTransport, TranscriptEntry
from vfl.messages import REGISTRY
from vfl.model import PartyModel, check_party_name
from vfl.plan import ScoringPlan, TrainingPlan
from vfl.preprocessing import PartyPreprocessor
from vfl.roles import ActiveParty, Coordinator, PassiveParty
from vfl.runner import run_session
from vfl.scoring import ActiveScorer, PassiveScorer, ScoringCoordinator

__all__ = ["VerticalLogisticRegression", "COORDINATOR"]

COORDINATOR = "coordinator"
_PARAMS = (
    "backend",
    "key_bits",
    "learning_rate",
    "max_iter",
    "batch_size",
    "l2",
    "optimizer",
    "tol",
    "random_state",
    "allow_small_batches",
    "categorical",
    "strict",
    "id_column",
    "verbose",
    "keep_payloads",
    "n_jobs",
)


def _labels_array(labels: Any, n_rows: int) -> np.ndarray:
    series = pd.Series(labels) if not isinstance(labels, pd.Series) else labels
    if len(series) != n_rows:
        raise DataError(f"got {len(series)} labels for {n_rows} rows of the label party")
    if series.isna().any():
        raise DataError("labels contain missing values")
    if not (pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)):
        raise DataError(f"labels must be numeric 0/1, got dtype {series.dtype}")
    values = series.to_numpy(dtype=np.float64)
    distinct = set(np.unique(values).tolist())
    if not distinct <= {0.0, 1.0}:
        raise DataError(f"labels must be binary 0/1, found {len(distinct)} distinct values")
    if len(distinct) < 2:
        raise DataError("labels hold only one class")
    return values


class VerticalLogisticRegression:
    """Logistic regression over vertically partitioned data, trained under homomorphic encryption.

    Parameters
    ----------
    backend:
        ``"paillier"`` (exact fixed-point arithmetic) or ``"ckks"`` (approximate, packed, much
        faster; see ``docs/security.md`` for its masking and precision trade-offs).
    key_bits:
        Paillier modulus size; 2048 by default, smaller only inside
        ``protocols.testing.insecure_keys_allowed()``. CKKS ignores it and picks a 128-bit-secure
        ring (N = 8192 or 16384) from the parties' feature counts.
    learning_rate, max_iter, batch_size, l2, optimizer, tol:
        Mini-batch training on the Taylor approximation ``sigmoid(z) ~ 1/2 + z/4``; ``max_iter``
        counts epochs; training stops early when the epoch's mean Taylor loss changes by less
        than ``tol``. ``optimizer`` is ``"adam"`` or ``"sgd"``; ``l2`` is the ridge penalty (not
        applied to the intercept).
    random_state:
        Seed of the shared mini-batch schedule (``None``: fresh entropy).
    allow_small_batches:
        Disable the guard that refuses ``batch_size <= n_features`` of any party.
    categorical:
        Optional ``{party: [columns]}`` to one-hot encode (string columns always are).
    strict:
        Raise on missing values instead of imputing medians/modes.
    id_column:
        If a frame has this column it is checked to line up across parties and not used as a
        feature.
    verbose:
        Show a progress bar while training.
    keep_payloads:
        Keep every frame's bytes in ``transcript_`` (for audits; memory-hungry).
    n_jobs:
        Worker processes for Paillier arithmetic (default ``1``: none, so plain scripts work as
        written; ``None``: every core, as ``vfl demo`` and ``vfl train`` use). Workers start with
        the ``forkserver`` method, so scripts that pass ``n_jobs != 1`` must call ``fit`` under
        ``if __name__ == "__main__":``.

    Attributes
    ----------
    coef_ : dict[str, numpy.ndarray]
        Each party's weights (in the order of ``feature_names_[party]``).
    intercept_ : float
        The intercept, held by the label party.
    n_iter_, converged_, history_ :
        Epochs run, whether ``tol`` stopped training, and the mean Taylor loss per epoch.
    transcript_ : list[TranscriptEntry]
        Sender, receiver, round, message type and size of every message of ``fit``.
    seconds_per_epoch_ : float
        Measured wall time per epoch.

    Security
    --------
    See ``docs/security.md``: the coordinator decrypts only masked gradients and the batch loss;
    passive parties see only ciphertexts and their own gradients; the label party sees
    ciphertexts, its own gradient, and total scores at prediction.

    Examples
    --------
    >>> model = VerticalLogisticRegression(max_iter=5).fit(frames, y, label_party="bank")
    ...                                                     # doctest: +SKIP
    """

    def __init__(
        self,
        backend: str = "paillier",
        key_bits: int = 2048,
        learning_rate: float = 0.05,
        max_iter: int = 10,
        batch_size: int = 256,
        l2: float = 1e-3,
        optimizer: str = "adam",
        tol: float = 1e-4,
        random_state: int | None = None,
        allow_small_batches: bool = False,
        categorical: Mapping[str, list[str]] | None = None,
        strict: bool = False,
        id_column: str | None = "id",
        verbose: bool = False,
        keep_payloads: bool = False,
        n_jobs: int | None = 1,
    ) -> None:
        self.backend = backend
        self.key_bits = key_bits
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.l2 = l2
        self.optimizer = optimizer
        self.tol = tol
        self.random_state = random_state
        self.allow_small_batches = allow_small_batches
        self.categorical = categorical
        self.strict = strict
        self.id_column = id_column
        self.verbose = verbose
        self.keep_payloads = keep_payloads
        self.n_jobs = n_jobs

    # -- scikit-learn conventions ------------------------------------------------------------
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _PARAMS}

    def set_params(self, **params: Any) -> VerticalLogisticRegression:
        for name, value in params.items():
            if name not in _PARAMS:
                raise ParameterError(f"unknown parameter {name!r}")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        return f"VerticalLogisticRegression(backend={self.backend!r}, key_bits={self.key_bits})"

    # -- input handling ----------------------------------------------------------------------
    def _split_frames(
        self, features: Mapping[str, pd.DataFrame]
    ) -> tuple[dict[str, pd.DataFrame], int]:
        if not isinstance(features, Mapping) or len(features) < 2:
            raise ParameterError("features must be a dict of at least two parties' DataFrames")
        frames: dict[str, pd.DataFrame] = {}
        ids: pd.Series | None = None
        n_rows: int | None = None
        for name, frame in features.items():
            check_party_name(name)
            if name == COORDINATOR:
                raise ParameterError(f"{COORDINATOR!r} is reserved for the coordinator role")
            if not isinstance(frame, pd.DataFrame):
                raise ParameterError(f"features[{name!r}] must be a pandas DataFrame")
            if n_rows is None:
                n_rows = len(frame)
            elif len(frame) != n_rows:
                raise DataError(
                    f"party {name!r} has {len(frame)} rows, others have {n_rows}: align them "
                    "first (psi.align)"
                )
            if self.id_column is not None and self.id_column in frame.columns:
                column = frame[self.id_column].astype(str).reset_index(drop=True)
                if ids is None:
                    ids = column
                elif not column.equals(ids):
                    raise DataError(
                        f"party {name!r}: rows are not aligned on {self.id_column!r} "
                        "(run psi.align first)"
                    )
                frame = frame.drop(columns=[self.id_column])
            if frame.shape[1] == 0:
                raise DataError(f"party {name!r} has no feature columns")
            frames[name] = frame
        assert n_rows is not None
        if n_rows == 0:
            raise DataError("no rows to train on")
        return frames, n_rows

    def _check_params(self) -> None:
        if not isinstance(self.max_iter, int) or self.max_iter < 1:
            raise ParameterError(f"max_iter must be a positive int, got {self.max_iter!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ParameterError(f"batch_size must be a positive int, got {self.batch_size!r}")
        if not (
            isinstance(self.learning_rate, (int, float))
            and self.learning_rate > 0
            and math.isfinite(self.learning_rate)
        ):
            raise ParameterError(f"learning_rate must be positive, got {self.learning_rate!r}")
        if self.n_jobs is not None and (
            isinstance(self.n_jobs, bool) or not isinstance(self.n_jobs, int) or self.n_jobs < 1
        ):
            raise ParameterError(f"n_jobs must be None or a positive int, got {self.n_jobs!r}")
        if self.categorical is not None and not isinstance(self.categorical, Mapping):
            raise ParameterError("categorical must be a dict {party: [columns]}")

    # -- fit -----------------------------------------------------------------------------------
    def fit(
        self,
        features: Mapping[str, pd.DataFrame],
        labels: pd.Series | np.ndarray,
        label_party: str,
    ) -> VerticalLogisticRegression:
        """Train on aligned frames (row ``i`` is the same customer at every party).

        Raises
        ------
        ParameterError
            Bad hyper-parameters, unknown ``label_party``, or a batch too small for a party's
            feature count (label-leak guard).
        InsecureParametersError
            ``key_bits`` below 2048 outside the test-only switch.
        DataError
            Misaligned frames, a party without feature columns, NaN in strict mode, labels that
            are missing, non-numeric or not binary.
        """
        self._check_params()
        frames, n_rows = self._split_frames(features)
        if label_party not in frames:
            raise ParameterError(f"label_party {label_party!r} is not one of {sorted(frames)}")
        y = _labels_array(labels, n_rows)
        backend = get_backend(self.backend)
        categorical = dict(self.categorical or {})
        unknown = set(categorical) - set(frames)
        if unknown:
            raise ParameterError(f"categorical names unknown parties {sorted(unknown)}")
        preprocessors: dict[str, PartyPreprocessor] = {}
        matrices: dict[str, np.ndarray] = {}
        for name, frame in frames.items():
            preprocessor = PartyPreprocessor(categorical=categorical.get(name), strict=self.strict)
            matrices[name] = preprocessor.fit_transform(frame)
            preprocessors[name] = preprocessor
        seed = (
            int(self.random_state)
            if self.random_state is not None
            else int(np.random.SeedSequence().entropy % 2**63)  # type: ignore[operator]
        )
        passives = tuple(name for name in frames if name != label_party)
        plan = TrainingPlan(  # validates hyper-parameters and the label-leak guard
            coordinator=COORDINATOR,
            active=label_party,
            passives=passives,
            n_samples=n_rows,
            batch_size=self.batch_size,
            max_iter=self.max_iter,
            tol=float(self.tol),
            learning_rate=float(self.learning_rate),
            l2=float(self.l2),
            optimizer=self.optimizer,
            seed=seed,
            backend=self.backend,
            key_bits=self.key_bits,
            n_features=tuple(matrices[p].shape[1] for p in (label_party, *passives)),
            allow_small_batches=bool(self.allow_small_batches),
        )
        width = max(plan.gradient_size(p) for p in plan.parties)
        secret_key = backend.generate_secret_key(self.key_bits, vector_width=width)
        # CKKS picks its ring from the data; the plan records the key actually used
        plan = dataclasses.replace(plan, key_bits=secret_key.public_key.key_bits)
        coordinator = Coordinator(COORDINATOR, plan, secret_key, secrets.token_bytes(16))
        active = ActiveParty(label_party, matrices[label_party], y, plan)
        roles: dict[str, Any] = {COORDINATOR: coordinator, label_party: active}
        for name in passives:
            roles[name] = PassiveParty(name, matrices[name], plan)
        transport = InMemoryTransport(roles, keep_payloads=self.keep_payloads)
        total_rounds = plan.max_iter * plan.batches_per_epoch
        progress = _Progress(total_rounds, coordinator, enabled=self.verbose)
        started = time.perf_counter()
        try:
            with paillier_parallelism(self.n_jobs):
                run_session(
                    roles,
                    (coordinator, coordinator.start()),
                    transport,
                    REGISTRY,
                    on_message=progress.update,
                )
        finally:
            progress.close()
        elapsed = time.perf_counter() - started
        self.models_ = {
            name: PartyModel(
                name=name,
                role="active" if name == label_party else "passive",
                coef=roles[name].coef,
                intercept=roles[name].intercept,
                preprocessor=preprocessors[name],
            )
            for name in frames
        }
        self.label_party_ = label_party
        self.parties_ = tuple(frames)
        self.key_bits_ = plan.key_bits
        self.coef_ = {name: model.coef.copy() for name, model in self.models_.items()}
        self.intercept_ = float(active.intercept)
        self.feature_names_ = {name: list(p.feature_names_) for name, p in preprocessors.items()}
        self.n_iter_ = coordinator.n_iter
        self.converged_ = coordinator.converged
        self.history_ = list(coordinator.history)
        self.transcript_: list[TranscriptEntry] = list(transport.transcript)
        self.seconds_per_epoch_ = elapsed / max(1, coordinator.n_iter)
        self.n_features_in_ = sum(m.shape[1] for m in matrices.values())
        return self

    # -- predict -------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "models_"):
            raise NotFittedError("this VerticalLogisticRegression is not fitted yet; call fit")

    def decision_function(self, features: Mapping[str, pd.DataFrame]) -> np.ndarray:
        """Total scores ``z``, learned by the label party through one encrypted scoring round."""
        self._check_fitted()
        frames, n_rows = self._split_frames(features)
        if set(frames) != set(self.models_):
            raise DataError(
                f"expected frames of parties {sorted(self.models_)}, got {sorted(frames)}"
            )
        matrices = {name: self.models_[name].features(frame) for name, frame in frames.items()}
        backend = get_backend(self.backend)
        secret_key = backend.generate_secret_key(self.key_bits)
        passives = tuple(name for name in self.parties_ if name != self.label_party_)
        plan = ScoringPlan(
            coordinator=COORDINATOR,
            active=self.label_party_,
            passives=passives,
            n_rows=n_rows,
            backend=self.backend,
            key_bits=secret_key.public_key.key_bits,
        )
        active_model = self.models_[self.label_party_]
        active = ActiveScorer(
            self.label_party_,
            plan,
            matrices[self.label_party_],
            active_model.coef,
            active_model.intercept,
        )
        coordinator = ScoringCoordinator(COORDINATOR, plan, secret_key, secrets.token_bytes(16))
        roles: dict[str, Any] = {COORDINATOR: coordinator, self.label_party_: active}
        for name in passives:
            roles[name] = PassiveScorer(name, plan, matrices[name], self.models_[name].coef)
        transport = InMemoryTransport(roles)
        with paillier_parallelism(self.n_jobs):
            run_session(roles, (coordinator, coordinator.start()), transport, REGISTRY)
        assert active.scores is not None
        return active.scores

    def predict_proba(self, features: Mapping[str, pd.DataFrame]) -> np.ndarray:
        """Probabilities ``[[P(y=0), P(y=1)], ...]`` for aligned rows of every party."""
        z = self.decision_function(features)
        positive = 1.0 / (1.0 + np.exp(-np.clip(z, -500, 500)))
        return np.column_stack([1.0 - positive, positive])

    def predict(self, features: Mapping[str, pd.DataFrame]) -> np.ndarray:
        """Predicted class 0/1 (threshold 0.5)."""
        return (self.predict_proba(features)[:, 1] >= 0.5).astype(np.int64)

    # -- persistence ---------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write each party's share to ``<directory>/<party>/`` and a key-free manifest."""
        self._check_fitted()
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        for model in self.models_.values():
            model.save(folder)
        manifest = {
            "format_version": 1,
            "kind": "VerticalLogisticRegression",
            "label_party": self.label_party_,
            "parties": list(self.parties_),
            "params": {
                k: (dict(v) if k == "categorical" and v is not None else v)
                for k, v in self.get_params().items()
            },
            "n_iter": self.n_iter_,
            "key_bits": self.key_bits_,
            "converged": self.converged_,
            "history": self.history_,
            "seconds_per_epoch": self.seconds_per_epoch_,
        }
        path = folder / "model.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(manifest, indent=2))
        os.replace(tmp, path)
        return folder

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> VerticalLogisticRegression:
        """Rebuild a fitted estimator from :meth:`save`'s folder."""
        folder = Path(directory)
        try:
            manifest = json.loads((folder / "model.json").read_text())
            params = dict(manifest["params"])
            parties = [check_party_name(p) for p in manifest["parties"]]
            label_party = manifest["label_party"]
        except FileNotFoundError:
            raise DataError(f"{folder} holds no saved model (model.json missing)") from None
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise DataError(f"{folder / 'model.json'} is malformed ({exc})") from None
        unknown = set(params) - set(_PARAMS)
        if unknown or label_party not in parties:
            raise DataError(f"{folder / 'model.json'} is malformed")
        model = cls(**params)
        model.models_ = {name: PartyModel.load(folder, name) for name in parties}
        model.label_party_ = label_party
        model.parties_ = tuple(parties)
        model.key_bits_ = int(manifest.get("key_bits", model.key_bits))
        model.coef_ = {name: m.coef.copy() for name, m in model.models_.items()}
        model.intercept_ = model.models_[label_party].intercept
        model.feature_names_ = {
            name: list(m.preprocessor.feature_names_) for name, m in model.models_.items()
        }
        model.n_iter_ = int(manifest.get("n_iter", 0))
        model.converged_ = bool(manifest.get("converged", False))
        model.history_ = list(manifest.get("history", []))
        model.seconds_per_epoch_ = float(manifest.get("seconds_per_epoch", 0.0))
        model.n_features_in_ = sum(m.coef.size for m in model.models_.values())
        model.transcript_ = []  # transcripts describe a training run and are not saved
        return model


class _Progress:
    """tqdm bar over mini-batch rounds, updated from the coordinator's counter."""

    def __init__(self, total: int, coordinator: Coordinator, *, enabled: bool) -> None:
        self._coordinator = coordinator
        self._seen = 0
        self._bar: Any = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc="training", unit="batch", leave=False)

    def update(self) -> None:
        if self._bar is None:
            return
        done = self._coordinator.completed_rounds
        if done > self._seen:
            self._bar.update(done - self._seen)
            self._seen = done
            if self._coordinator.history:
                self._bar.set_postfix(
                    epoch=len(self._coordinator.history),
                    loss=f"{self._coordinator.history[-1]:.4f}",
                )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
