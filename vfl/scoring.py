"""Scoring (prediction) roles: the active party learns the total score, nothing per party.

1. the coordinator announces a fresh public key and :class:`ScoringStart`;
2. every passive party sends ``[[X_j w_j]]`` to the active party;
3. the active party adds them under encryption, masks the sum and sends it to the coordinator;
4. the coordinator decrypts the masked sum and returns it; the active party unmasks it and adds
   its own score. With two or more passive parties it cannot split the sum into their parts.
"""

from __future__ import annotations

import numpy as np

from protocols.backend import CiphertextVector, Mask, SecretKey
from protocols.errors import LocalProtocolError, ParameterError
from protocols.wire import Envelope
from vfl.messages import (
    EncryptedPartialScores,
    MaskedScores,
    MaskedScoresDecryption,
    PublicKeyAnnouncement,
    ScoringStart,
)
from vfl.plan import ScoringPlan
from vfl.roles import FRESH, Outgoing, _Role, _State

__all__ = ["ScoringCoordinator", "ActiveScorer", "PassiveScorer"]


class _ScoringRole(_Role):
    plan: ScoringPlan

    def __init__(self, name: str, plan: ScoringPlan) -> None:
        super().__init__(name, plan)
        self.plan = plan


class _ScoringParty(_ScoringRole):
    def __init__(
        self,
        name: str,
        plan: ScoringPlan,
        features: np.ndarray,
        weights: np.ndarray,
        intercept: float,
    ) -> None:
        super().__init__(name, plan)
        features = np.asarray(features, dtype=np.float64)
        weights = np.asarray(weights, dtype=np.float64).ravel()
        if features.ndim != 2 or features.shape != (plan.n_rows, weights.size):
            raise ParameterError(
                f"party {name!r}: expected features of shape ({plan.n_rows}, {weights.size}), "
                f"got {features.shape}"
            )
        self._own_scores = features @ weights + intercept

    def _accept_start(self, sender: str, envelope: Envelope) -> None:
        self._expect(sender, envelope, (ScoringStart,), (self.plan.coordinator,), 1)
        assert isinstance(envelope.message, ScoringStart)
        if envelope.message.n_rows != self.plan.n_rows:
            raise self._reject(sender, envelope, f"expected {self.plan.n_rows} rows")
        self.round_index = 1


class PassiveScorer(_ScoringParty):
    """A passive party's side of scoring: sends its encrypted partial scores."""

    def __init__(
        self, name: str, plan: ScoringPlan, features: np.ndarray, weights: np.ndarray
    ) -> None:
        if name not in plan.passives:
            raise ParameterError(f"{name!r} is not a passive party of this scoring plan")
        super().__init__(name, plan, features, weights, 0.0)

    def handle(self, sender: str, envelope: Envelope) -> list[Outgoing]:
        if self.state is _State.WAIT_KEY:
            self._accept_announcement(sender, envelope)
            return []
        if self.state is _State.IDLE:
            self._accept_start(sender, envelope)
            key = self._key()
            message = EncryptedPartialScores(
                scores=key.ciphertext_to_bytes(key.encrypt(self._own_scores)), squared_sum=b""
            )
            self.state = _State.DONE
            return [Outgoing(self.plan.active, message, self.round_index)]
        raise self._reject(sender, envelope, "no message is expected")


class ActiveScorer(_ScoringParty):
    """The active party's side of scoring; :attr:`scores` holds the total scores at the end."""

    def __init__(
        self,
        name: str,
        plan: ScoringPlan,
        features: np.ndarray,
        weights: np.ndarray,
        intercept: float,
    ) -> None:
        if name != plan.active:
            raise ParameterError(f"{name!r} is not the active party of this scoring plan")
        super().__init__(name, plan, features, weights, intercept)
        self._partial: dict[str, CiphertextVector] = {}
        self._mask: Mask | None = None
        self.scores: np.ndarray | None = None

    def handle(self, sender: str, envelope: Envelope) -> list[Outgoing]:
        if self.state is _State.WAIT_KEY:
            self._accept_announcement(sender, envelope)
            return []
        if self.state is _State.IDLE:
            self._accept_start(sender, envelope)
            self.state = _State.WAIT_SCORES
            return []
        if self.state is _State.WAIT_SCORES:
            pending = tuple(p for p in self.plan.passives if p not in self._partial)
            self._expect(sender, envelope, (EncryptedPartialScores,), pending, 1)
            message = envelope.message
            assert isinstance(message, EncryptedPartialScores)
            if message.squared_sum:
                raise self._reject(sender, envelope, "scoring carries no squared sum")
            scores = self._load_ciphertext(
                sender, envelope, message.scores, self.plan.n_rows, FRESH, "vector"
            )
            self._partial = {**self._partial, sender: scores}
            if len(self._partial) < len(self.plan.passives):
                return []
            key = self._key()
            vectors = [self._partial[p] for p in self.plan.passives]
            total = vectors[0]
            for vector in vectors[1:]:
                total = key.add(total, vector)
            masked, self._mask = key.mask(total)
            self.state = _State.WAIT_GRADIENT
            return [
                Outgoing(
                    self.plan.coordinator,
                    MaskedScores(values=key.ciphertext_to_bytes(masked)),
                    1,
                )
            ]
        if self.state is _State.WAIT_GRADIENT:
            self._expect(sender, envelope, (MaskedScoresDecryption,), (self.plan.coordinator,), 1)
            assert isinstance(envelope.message, MaskedScoresDecryption) and self._mask is not None
            passive_total = self._key().unmask(envelope.message.values, self._mask)
            self.scores = passive_total + self._own_scores
            self._mask = None
            self.state = _State.DONE
            return []
        raise self._reject(sender, envelope, "no message is expected")


class ScoringCoordinator(_ScoringRole):
    """Decrypts the one masked vector of summed passive scores for the active party."""

    def __init__(self, name: str, plan: ScoringPlan, secret_key: SecretKey, session_id: bytes):
        if name != plan.coordinator:
            raise ParameterError(f"{name!r} is not the coordinator of this scoring plan")
        super().__init__(name, plan)
        self._secret_key = secret_key
        self.public_key = secret_key.public_key
        self.session_id = session_id
        self.state = _State.IDLE

    def start(self) -> list[Outgoing]:
        if self.state is not _State.IDLE:
            raise LocalProtocolError("the scoring coordinator has already started")
        announce = PublicKeyAnnouncement(
            backend=self.plan.backend,
            public_key=self._key().to_bytes(),
            plan_digest=self.plan.digest(),
        )
        start = ScoringStart(n_rows=self.plan.n_rows)
        out = [Outgoing(p, announce, 0) for p in self.plan.parties]
        out += [Outgoing(p, start, 1) for p in self.plan.parties]
        self.round_index = 1
        self.state = _State.WAIT_ROUND
        return out

    def handle(self, sender: str, envelope: Envelope) -> list[Outgoing]:
        if self.state is not _State.WAIT_ROUND:
            raise self._reject(sender, envelope, "no message is expected")
        self._expect(sender, envelope, (MaskedScores,), (self.plan.active,), 1)
        assert isinstance(envelope.message, MaskedScores)
        masked = self._load_ciphertext(
            sender, envelope, envelope.message.values, self.plan.n_rows, FRESH, "masked"
        )
        self.state = _State.DONE
        reply = MaskedScoresDecryption(values=self._secret_key.decrypt_masked(masked))
        return [Outgoing(self.plan.active, reply, 1)]
