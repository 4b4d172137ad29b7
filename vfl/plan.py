"""The training plan every role agrees on before a session (hyper-parameters, roles, seed)."""

from __future__ import annotations

import functools
import hashlib
import json
import math
from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np

from protocols.errors import ParameterError
from vfl.optim import OPTIMIZERS

__all__ = ["TrainingPlan", "ScoringPlan", "SessionPlan", "minibatches"]


class SessionPlan(Protocol):
    """What every session plan (training or scoring) tells a role."""

    @property
    def coordinator(self) -> str: ...

    @property
    def active(self) -> str: ...

    @property
    def passives(self) -> tuple[str, ...]: ...

    @property
    def backend(self) -> str: ...

    @property
    def key_bits(self) -> int: ...

    @property
    def parties(self) -> tuple[str, ...]: ...

    def digest(self) -> bytes: ...


def minibatches(seed: int, n_samples: int, batch_size: int, epoch: int) -> list[np.ndarray]:
    """The epoch's mini-batches: a permutation from ``default_rng([seed, epoch])`` split into
    ``max(1, n_samples // batch_size)`` nearly equal sorted chunks.

    Remainder rows are spread over the batches, so no batch is smaller than ``batch_size``
    (a small last batch would weaken the label-leak guard). The arrays are read-only (cached:
    every role asks for every batch).
    """
    return list(_minibatches(seed, n_samples, batch_size, epoch))


@functools.lru_cache(maxsize=4)  # the roles only ever need the current epoch
def _minibatches(seed: int, n_samples: int, batch_size: int, epoch: int) -> tuple[np.ndarray, ...]:
    n_batches = max(1, n_samples // batch_size)
    order = np.random.default_rng([seed, epoch]).permutation(n_samples)
    batches = tuple(np.sort(chunk) for chunk in np.array_split(order, n_batches))
    for rows in batches:
        rows.setflags(write=False)
    return batches


def _check_names(names: tuple[str, ...]) -> None:
    if len(set(names)) != len(names):
        raise ParameterError("role names must be unique")


@dataclass(frozen=True)
class TrainingPlan:
    """Public parameters of one training session.

    Every party derives the same mini-batches from ``seed`` and the epoch number, so no batch
    indices are ever sent. The coordinator announces :meth:`digest` with its public key and every
    party checks it against its own plan.

    ``n_features`` gives each party's feature count in :attr:`parties` order (label party first).
    The plan refuses batches through which any party could solve its plaintext gradient for the
    residuals (``batch size <= gradient columns``; the label party's gradient has one more
    column, the intercept) unless ``allow_small_batches``; since the flag and the counts are part
    of the digest, every role agrees on the guard, not just the party it protects against.
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
    n_features: tuple[int, ...]
    allow_small_batches: bool = False

    def __post_init__(self) -> None:
        _check_names((self.coordinator, self.active, *self.passives))
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
        if len(self.n_features) != len(self.parties) or min(self.n_features) < 1:
            raise ParameterError("n_features needs a positive count for every party")
        if not self.allow_small_batches:
            smallest = self.n_samples // self.batches_per_epoch
            for party in self.parties:
                columns = self.gradient_size(party)
                if smallest <= columns:
                    raise ParameterError(
                        f"batch size {smallest} is not larger than party {party!r}'s {columns} "
                        "gradient columns: its gradient would reveal the residuals (and so the "
                        "labels or the other parties' scores); use a larger batch_size or pass "
                        "allow_small_batches=True if you accept that leak"
                    )

    def gradient_size(self, party: str) -> int:
        """Number of gradient values ``party`` sends: its features, plus the intercept."""
        count = self.n_features[self.parties.index(party)]
        return count + 1 if party == self.active else count

    @property
    def parties(self) -> tuple[str, ...]:
        return (self.active, *self.passives)

    @property
    def batches_per_epoch(self) -> int:
        return max(1, self.n_samples // self.batch_size)

    def closes_epoch(self, batch: int) -> bool:
        """True for the epoch's last mini-batch, the one that carries the epoch's loss."""
        return batch == self.batches_per_epoch - 1

    def batch_indices(self, epoch: int, batch: int) -> np.ndarray:
        """Sorted row indices of one mini-batch (the same at every party)."""
        return minibatches(self.seed, self.n_samples, self.batch_size, epoch)[batch]

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

    def __post_init__(self) -> None:
        _check_names((self.coordinator, self.active, *self.passives))
        if not self.passives:
            raise ParameterError("at least one passive party is needed")
        if self.n_rows < 1:
            raise ParameterError("no rows to score")

    @property
    def parties(self) -> tuple[str, ...]:
        return (self.active, *self.passives)

    def digest(self) -> bytes:
        canonical = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(b"scoring" + canonical.encode()).digest()
