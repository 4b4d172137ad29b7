"""The training plan every role agrees on before a session (hyper-parameters, roles, seed)."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass

import numpy as np

from protocols.errors import ParameterError
from vfl.optim import OPTIMIZERS

__all__ = ["TrainingPlan", "ScoringPlan"]


@dataclass(frozen=True)
class TrainingPlan:
    """Public parameters of one training session.

    Every party derives the same mini-batches from ``seed`` and the epoch number, so no batch
    indices are ever sent. The coordinator announces :meth:`digest` with its public key and every
    party checks it against its own plan.
    """

    coordinator: str
    active: str
    passives: tuple[str, ...]
    n_samples: int
    batch_size: int
    max_iter: int
    tol: float
    learning_rate: float
    l2: float
    optimizer: str
    seed: int
    backend: str
    key_bits: int

    def __post_init__(self) -> None:
        names = (self.coordinator, self.active, *self.passives)
        if len(set(names)) != len(names):
            raise ParameterError("role names must be unique")
        if not self.passives:
            raise ParameterError("at least one passive party is needed")
        if self.n_samples < 1:
            raise ParameterError("no training samples")
        if self.batch_size < 1:
            raise ParameterError(f"batch_size must be positive, got {self.batch_size}")
        if self.max_iter < 1:
            raise ParameterError(f"max_iter must be at least 1, got {self.max_iter}")
        if not self.tol >= 0:
            raise ParameterError(f"tol must be non-negative, got {self.tol}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ParameterError(f"learning_rate must be positive, got {self.learning_rate}")
        if not self.l2 >= 0:
            raise ParameterError(f"l2 must be non-negative, got {self.l2}")
        if self.optimizer not in OPTIMIZERS:
            raise ParameterError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")

    @property
    def parties(self) -> tuple[str, ...]:
        return (self.active, *self.passives)

    @property
    def batches_per_epoch(self) -> int:
        # Remainder rows are spread over the batches so that no batch is smaller than batch_size
        # (a small last batch would weaken the label-leak guard).
        return max(1, self.n_samples // self.batch_size)

    def batch_indices(self, epoch: int, batch: int) -> np.ndarray:
        """Sorted row indices of one mini-batch (the same at every party)."""
        order = np.random.default_rng([self.seed, epoch]).permutation(self.n_samples)
        return np.sort(np.array_split(order, self.batches_per_epoch)[batch])

    def digest(self) -> bytes:
        canonical = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).digest()


@dataclass(frozen=True)
class ScoringPlan:
    """Public parameters of one scoring session."""

    coordinator: str
    active: str
    passives: tuple[str, ...]
    n_rows: int
    backend: str
    key_bits: int

    @property
    def parties(self) -> tuple[str, ...]:
        return (self.active, *self.passives)

    def digest(self) -> bytes:
        canonical = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(b"scoring" + canonical.encode()).digest()
