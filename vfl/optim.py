"""Optimizers each party runs on its own weights (state never leaves the party)."""

from __future__ import annotations

import numpy as np

from protocols.errors import ParameterError

__all__ = ["SGD", "Adam", "make_optimizer", "OPTIMIZERS"]


class SGD:
    """Plain gradient descent: ``w <- w - lr * g``."""

    def __init__(self, learning_rate: float) -> None:
        self.learning_rate = learning_rate

    def step(self, weights: np.ndarray, gradient: np.ndarray) -> np.ndarray:
        return weights - self.learning_rate * gradient


class Adam:
    """Adam (Kingma and Ba, 2015) with bias correction."""

    def __init__(
        self, learning_rate: float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8
    ) -> None:
        self.learning_rate = learning_rate
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self._m: np.ndarray | None = None
        self._v: np.ndarray | None = None
        self._t = 0

    def step(self, weights: np.ndarray, gradient: np.ndarray) -> np.ndarray:
        if self._m is None or self._v is None:
            self._m = np.zeros_like(weights)
            self._v = np.zeros_like(weights)
        self._t += 1
        self._m = self.beta1 * self._m + (1 - self.beta1) * gradient
        self._v = self.beta2 * self._v + (1 - self.beta2) * gradient * gradient
        m_hat = self._m / (1 - self.beta1**self._t)
        v_hat = self._v / (1 - self.beta2**self._t)
        return weights - self.learning_rate * m_hat / (np.sqrt(v_hat) + self.eps)


OPTIMIZERS = ("adam", "sgd")


def make_optimizer(name: str, learning_rate: float) -> SGD | Adam:
    if name == "adam":
        return Adam(learning_rate)
    if name == "sgd":
        return SGD(learning_rate)
    raise ParameterError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
