"""The three training roles as sans-I/O state machines.

A role takes a decoded :class:`~protocols.wire.Envelope` from a named sender and returns the
messages it wants sent (:class:`Outgoing`). It never touches a socket, a thread or a global. A
message the current state does not allow raises :class:`RemoteProtocolError` and leaves the role
unchanged; every check runs before any state is touched.

One mini-batch (PROTOCOL.md, Taylor-1 with labels in {0, 1}, everything scaled by 4):

1. every passive party ``j`` sends ``[[u_j]]``, ``u_j = X_j w_j``, plus ``[[sum u_j^2]]``;
2. the active party forms ``[[4d]] = sum_j [[u_j]] + Enc(u_B + 2 - 4y)`` (a *fresh* encryption,
   so no passive party can subtract its own ciphertext and read the label term) and sends it;
3. every party sends ``[[X^T 4d + r]]`` with a fresh mask ``r`` to the coordinator, which
   returns the decryption to that party only; the party unmasks, divides by ``4m``, adds
   ``l2 * w`` and steps its own optimizer;
4. the active party sends ``[[8 * sum of Taylor losses]]``; the coordinator decrypts only this
   batch aggregate and uses the epoch mean for ``tol``.

With several passive parties the loss needs the cross terms ``sum_s u_i,s u_j,s``: the active
party sends passive ``i`` the (re-randomised) sum of the later passive parties' encrypted scores,
and ``i`` returns one ciphertext ``[[sum_s u_i,s * U_later,s]]``.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np

from protocols import get_backend
from protocols.backend import CiphertextVector, Mask, PublicKey, SecretKey
from protocols.errors import LocalProtocolError, ParameterError, RemoteProtocolError
from protocols.wire import Envelope, Message
from vfl.messages import (
    EncryptedCrossTerm,
    EncryptedLoss,
    EncryptedPartialScores,
    EncryptedResidual,
    MaskedGradient,
    MaskedGradientDecryption,
    PublicKeyAnnouncement,
    RoundStart,
    TrainingComplete,
)
from vfl.optim import make_optimizer
from vfl.plan import TrainingPlan

__all__ = ["Outgoing", "Coordinator", "ActiveParty", "PassiveParty", "check_batch_guard"]

_LOG2 = math.log(2.0)


@dataclass(frozen=True)
class Outgoing:
    """A message a role wants delivered to ``receiver`` in round ``round_index``."""

    receiver: str
    message: Message
    round_index: int


class _State(enum.Enum):
    WAIT_KEY = "waiting for the public key"
    IDLE = "waiting for a round to start"
    WAIT_SCORES = "waiting for encrypted partial scores"
    WAIT_RESIDUAL = "waiting for the encrypted residual"
    WAIT_CROSS = "waiting for encrypted cross terms"
    WAIT_GRADIENT = "waiting for the decrypted masked gradient"
    WAIT_ROUND = "waiting for masked gradients and the loss"
    DONE = "finished"


def check_batch_guard(plan: TrainingPlan, n_features: int, party: str, override: bool) -> None:
    """Refuse batches through which a party could solve its gradient for the residuals.

    With ``m <= n_features`` the plaintext gradient ``X^T d / m`` determines ``d`` and so the
    labels; SecretFlow enforces the same bound.
    """
    if override:
        return
    smallest = plan.n_samples // plan.batches_per_epoch
    if smallest <= n_features:
        raise ParameterError(
            f"batch size {smallest} is not larger than party {party!r}'s {n_features} features: "
            "its gradient would reveal the residuals (and so the labels); use a larger "
            "batch_size or pass allow_small_batches=True if you accept that leak"
        )


def _round_of(plan: TrainingPlan, epoch: int, batch: int) -> int:
    return 1 + epoch * plan.batches_per_epoch + batch


class _Role:
    """Shared plumbing: session/round/sender checks and key loading."""

    name: str
    plan: TrainingPlan

    def __init__(self, name: str, plan: TrainingPlan) -> None:
        self.name = name
        self.plan = plan
        self.state = _State.WAIT_KEY
        self.session_id = b""
        self.public_key: PublicKey | None = None
        self.round_index = 0

    @property
    def done(self) -> bool:
        return self.state is _State.DONE

    def _reject(self, sender: str, envelope: Envelope, why: str) -> RemoteProtocolError:
        return RemoteProtocolError(
            f"{self.name}: {type(envelope.message).__name__} from {sender!r} in round "
            f"{envelope.round_index} rejected while {self.state.value}: {why}"
        )

    def _expect(
        self,
        sender: str,
        envelope: Envelope,
        types: tuple[type[Message], ...],
        senders: tuple[str, ...],
        round_index: int,
    ) -> None:
        if not isinstance(envelope.message, types):
            allowed = ", ".join(t.__name__ for t in types)
            raise self._reject(sender, envelope, f"expected {allowed}")
        if sender not in senders:
            raise self._reject(sender, envelope, f"expected it from {', '.join(senders)}")
        if envelope.session_id != self.session_id:
            raise self._reject(sender, envelope, "it belongs to another session")
        if envelope.round_index != round_index:
            raise self._reject(sender, envelope, f"expected round {round_index}")

    def _key(self) -> PublicKey:
        if self.public_key is None:
            raise LocalProtocolError(f"{self.name} has no public key yet")
        return self.public_key

    def _load_ciphertext(
        self, sender: str, envelope: Envelope, data: bytes, size: int
    ) -> CiphertextVector:
        vector = self._key().ciphertext_from_bytes(data)
        if vector.size != size:
            raise self._reject(sender, envelope, f"expected {size} ciphertexts, got {vector.size}")
        return vector

    def _accept_announcement(self, sender: str, envelope: Envelope) -> None:
        message = envelope.message
        if not isinstance(message, PublicKeyAnnouncement) or self.state is not _State.WAIT_KEY:
            raise self._reject(sender, envelope, "expected PublicKeyAnnouncement first")
        if sender != self.plan.coordinator or envelope.round_index != 0:
            raise self._reject(sender, envelope, "announcement must come from the coordinator")
        if message.backend != self.plan.backend:
            raise self._reject(sender, envelope, f"backend is not {self.plan.backend!r}")
        if message.plan_digest != self.plan.digest():
            raise self._reject(sender, envelope, "the coordinator's plan differs from ours")
        key = get_backend(message.backend).public_key_from_bytes(message.public_key)
        if key.key_bits != self.plan.key_bits:
            raise self._reject(sender, envelope, f"key is not {self.plan.key_bits} bits")
        self.public_key = key
        self.session_id = envelope.session_id
        self.state = _State.IDLE


class _Party(_Role):
    """A data-holding party: its features, its weights, its optimizer."""

    def __init__(
        self,
        name: str,
        features: np.ndarray,
        plan: TrainingPlan,
        *,
        fit_intercept: bool,
        allow_small_batches: bool = False,
    ) -> None:
        super().__init__(name, plan)
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or features.shape[0] != plan.n_samples:
            raise ParameterError(
                f"party {name!r}: features must be a 2-D array with {plan.n_samples} rows"
            )
        if features.shape[1] == 0:
            raise ParameterError(f"party {name!r} has no feature columns")
        check_batch_guard(plan, features.shape[1], name, allow_small_batches)
        self._features = features
        self.fit_intercept = fit_intercept
        self.n_features = features.shape[1]
        self.weights = np.zeros(self.n_features + (1 if fit_intercept else 0))
        self._optimizer = make_optimizer(plan.optimizer, plan.learning_rate)
        self._batch = np.empty(0, dtype=np.int64)
        self._mask: Mask | None = None
        self.n_iter = 0
        self.converged = False

    @property
    def coef(self) -> np.ndarray:
        return self.weights[: self.n_features].copy()

    @property
    def intercept(self) -> float:
        return float(self.weights[-1]) if self.fit_intercept else 0.0

    def _design(self, rows: np.ndarray) -> np.ndarray:
        block = self._features[rows]
        if self.fit_intercept:
            block = np.hstack([block, np.ones((block.shape[0], 1))])
        return block

    def _scores(self, rows: np.ndarray) -> np.ndarray:
        return self._design(rows) @ self.weights

    def _masked_gradient(self, residual: CiphertextVector) -> Outgoing:
        key = self._key()
        gradient = key.dot_columns(self._design(self._batch), residual)
        masked, self._mask = key.mask(gradient)
        message = MaskedGradient(values=key.ciphertext_to_bytes(masked))
        return Outgoing(self.plan.coordinator, message, self.round_index)

    def _apply_gradient(self, sender: str, envelope: Envelope) -> None:
        message = envelope.message
        assert isinstance(message, MaskedGradientDecryption) and self._mask is not None
        raw = self._key().unmask(message.values, self._mask)  # checks the count
        gradient = raw / (4.0 * self._batch.size)
        penalty = self.plan.l2 * self.weights
        if self.fit_intercept:
            penalty[-1] = 0.0  # the intercept is not regularised
        self.weights = self._optimizer.step(self.weights, gradient + penalty)
        self._mask = None

    def _handle_common(self, sender: str, envelope: Envelope) -> bool:
        """Announcement, round start bookkeeping and completion. True when handled."""
        if self.state is _State.WAIT_KEY:
            self._accept_announcement(sender, envelope)
            return True
        if self.state is _State.IDLE and isinstance(envelope.message, TrainingComplete):
            self._expect(
                sender,
                envelope,
                (TrainingComplete,),
                (self.plan.coordinator,),
                self.round_index + 1,
            )
            self.n_iter = envelope.message.n_iter
            self.converged = envelope.message.converged
            self.state = _State.DONE
            return True
        return False

    def _start_round(self, sender: str, envelope: Envelope) -> tuple[int, int]:
        self._expect(
            sender, envelope, (RoundStart,), (self.plan.coordinator,), self.round_index + 1
        )
        message = envelope.message
        assert isinstance(message, RoundStart)
        expected = _round_of(self.plan, message.epoch, message.batch)
        valid = (
            0 <= message.epoch < self.plan.max_iter
            and 0 <= message.batch < self.plan.batches_per_epoch
        )
        if not valid or expected != envelope.round_index:
            raise self._reject(sender, envelope, "epoch/batch do not match the round")
        return message.epoch, message.batch


class PassiveParty(_Party):
    """Holds features only; sees ciphertexts and its own gradient.

    Parameters
    ----------
    name, features, plan:
        Its name in the plan, its aligned training features ``(n_samples, n_features)``, the plan.
    allow_small_batches:
        Switch off the label-leak guard (``batch_size`` must exceed ``n_features``).
    """

    def __init__(
        self,
        name: str,
        features: np.ndarray,
        plan: TrainingPlan,
        *,
        allow_small_batches: bool = False,
    ) -> None:
        if name not in plan.passives:
            raise ParameterError(f"{name!r} is not a passive party of this plan")
        super().__init__(
            name, features, plan, fit_intercept=False, allow_small_batches=allow_small_batches
        )
        position = plan.passives.index(name)
        self._sends_cross_term = position < len(plan.passives) - 1
        self._own_scores = np.empty(0)

    def handle(self, sender: str, envelope: Envelope) -> list[Outgoing]:
        if self._handle_common(sender, envelope):
            return []
        if self.state is _State.IDLE:
            epoch, batch = self._start_round(sender, envelope)
            key = self._key()
            rows = self.plan.batch_indices(epoch, batch)
            scores = self._scores(rows)
            scores_message = EncryptedPartialScores(
                scores=key.ciphertext_to_bytes(key.encrypt(scores)),
                squared_sum=key.ciphertext_to_bytes(key.encrypt([float(scores @ scores)])),
            )
            self._batch, self._own_scores = rows, scores
            self.round_index = envelope.round_index
            self.state = _State.WAIT_RESIDUAL
            return [Outgoing(self.plan.active, scores_message, self.round_index)]
        if self.state is _State.WAIT_RESIDUAL:
            self._expect(
                sender, envelope, (EncryptedResidual,), (self.plan.active,), self.round_index
            )
            message = envelope.message
            assert isinstance(message, EncryptedResidual)
            residual = self._load_ciphertext(sender, envelope, message.residual, self._batch.size)
            later: CiphertextVector | None = None
            if self._sends_cross_term:
                later = self._load_ciphertext(
                    sender, envelope, message.later_scores, self._batch.size
                )
            elif message.later_scores:
                raise self._reject(sender, envelope, "unexpected later_scores")
            out = [self._masked_gradient(residual)]
            if later is not None:
                key = self._key()
                cross = key.rerandomize(key.dot_columns(self._own_scores[:, None], later))
                out.append(
                    Outgoing(
                        self.plan.active,
                        EncryptedCrossTerm(value=key.ciphertext_to_bytes(cross)),
                        self.round_index,
                    )
                )
            self.state = _State.WAIT_GRADIENT
            return out
        if self.state is _State.WAIT_GRADIENT:
            self._expect(
                sender,
                envelope,
                (MaskedGradientDecryption,),
                (self.plan.coordinator,),
                self.round_index,
            )
            self._apply_gradient(sender, envelope)
            self.state = _State.IDLE
            return []
        raise self._reject(sender, envelope, "no message is expected")


class ActiveParty(_Party):
    """Holds features and the binary labels; forms the encrypted residual and loss.

    The intercept lives here. Labels never leave this object in any form but inside a fresh
    encryption added to the passive parties' scores.
    """

    def __init__(
        self,
        name: str,
        features: np.ndarray,
        labels: np.ndarray,
        plan: TrainingPlan,
        *,
        allow_small_batches: bool = False,
    ) -> None:
        if name != plan.active:
            raise ParameterError(f"{name!r} is not the active party of this plan")
        super().__init__(
            name, features, plan, fit_intercept=True, allow_small_batches=allow_small_batches
        )
        labels = np.asarray(labels, dtype=np.float64).ravel()
        if labels.shape != (plan.n_samples,) or not np.isin(labels, (0.0, 1.0)).all():
            raise ParameterError(f"active party {name!r} needs {plan.n_samples} labels in {{0, 1}}")
        self._labels = labels
        self._partial: dict[str, tuple[CiphertextVector, CiphertextVector]] = {}
        self._cross: dict[str, CiphertextVector] = {}
        self._loss: CiphertextVector | None = None

    def handle(self, sender: str, envelope: Envelope) -> list[Outgoing]:
        if self._handle_common(sender, envelope):
            return []
        if self.state is _State.IDLE:
            epoch, batch = self._start_round(sender, envelope)
            self._batch = self.plan.batch_indices(epoch, batch)
            self._partial = {}
            self._cross = {}
            self.round_index = envelope.round_index
            self.state = _State.WAIT_SCORES
            return []
        if self.state is _State.WAIT_SCORES:
            pending = tuple(p for p in self.plan.passives if p not in self._partial)
            self._expect(sender, envelope, (EncryptedPartialScores,), pending, self.round_index)
            message = envelope.message
            assert isinstance(message, EncryptedPartialScores)
            scores = self._load_ciphertext(sender, envelope, message.scores, self._batch.size)
            squared = self._load_ciphertext(sender, envelope, message.squared_sum, 1)
            self._partial[sender] = (scores, squared)
            if len(self._partial) < len(self.plan.passives):
                return []
            return self._residual_round()
        if self.state is _State.WAIT_CROSS:
            pending = tuple(p for p in self.plan.passives[:-1] if p not in self._cross)
            self._expect(sender, envelope, (EncryptedCrossTerm,), pending, self.round_index)
            message = envelope.message
            assert isinstance(message, EncryptedCrossTerm)
            self._cross[sender] = self._load_ciphertext(sender, envelope, message.value, 1)
            if len(self._cross) < len(self.plan.passives) - 1:
                return []
            key = self._key()
            assert self._loss is not None
            loss = self._loss
            for term in self._cross.values():
                loss = key.add(loss, key.add(term, term))  # cross terms appear twice in z^2
            self.state = _State.WAIT_GRADIENT
            return [self._loss_message(loss)]
        if self.state is _State.WAIT_GRADIENT:
            self._expect(
                sender,
                envelope,
                (MaskedGradientDecryption,),
                (self.plan.coordinator,),
                self.round_index,
            )
            self._apply_gradient(sender, envelope)
            self.state = _State.IDLE
            return []
        raise self._reject(sender, envelope, "no message is expected")

    def _loss_message(self, loss: CiphertextVector) -> Outgoing:
        message = EncryptedLoss(
            value=self._key().ciphertext_to_bytes(loss), n_samples=int(self._batch.size)
        )
        return Outgoing(self.plan.coordinator, message, self.round_index)

    def _add_label_term(self, total: CiphertextVector, term: np.ndarray) -> CiphertextVector:
        # The label term enters as a *fresh* encryption: add_plain would be deterministic and
        # a lone passive party could subtract its own [[u]] and read u_B + 2 - 4y.
        key = self._key()
        return key.add(total, key.encrypt(term))

    def _residual_round(self) -> list[Outgoing]:
        key = self._key()
        rows = self._batch
        own = self._scores(rows)
        labels = self._labels[rows]
        passives = self.plan.passives
        encrypted = [self._partial[p][0] for p in passives]
        total = encrypted[0]
        for vector in encrypted[1:]:
            total = key.add(total, vector)
        residual = self._add_label_term(total, own + 2.0 - 4.0 * labels)
        residual_bytes = key.ciphertext_to_bytes(residual)
        out: list[Outgoing] = []
        for i, passive in enumerate(passives):
            later = b""
            if i < len(passives) - 1:
                later_sum = encrypted[i + 1]
                for vector in encrypted[i + 2 :]:
                    later_sum = key.add(later_sum, vector)
                later = key.ciphertext_to_bytes(key.rerandomize(later_sum))
            message = EncryptedResidual(residual=residual_bytes, later_scores=later)
            out.append(Outgoing(passive, message, self.round_index))
        out.append(self._masked_gradient(residual))
        # 8 * Taylor loss summed over the batch, with y' = 2y - 1 and z = u_B + U:
        #   8 log 2 - 4 y' z + z^2 = [8 log 2 - 4 y' u_B + u_B^2] + (2 u_B - 4 y') U + U^2
        signed = 2.0 * labels - 1.0
        loss = key.dot_columns((2.0 * own - 4.0 * signed)[:, None], total)
        for p in passives:
            loss = key.add(loss, self._partial[p][1])
        own_term = float(np.sum(8.0 * _LOG2 - 4.0 * signed * own + own * own))
        self._loss = key.add(loss, key.encrypt([own_term]))
        if len(passives) > 1:
            self.state = _State.WAIT_CROSS
            return out
        out.append(self._loss_message(self._loss))
        self.state = _State.WAIT_GRADIENT
        return out


class Coordinator(_Role):
    """Holds the secret key; decrypts only masked gradients and the aggregate loss.

    It never sees a weight, a feature or a label, and every gradient it decrypts is masked by a
    value uniform in the plaintext space.
    """

    def __init__(self, name: str, plan: TrainingPlan, secret_key: SecretKey, session_id: bytes):
        if name != plan.coordinator:
            raise ParameterError(f"{name!r} is not the coordinator of this plan")
        super().__init__(name, plan)
        if secret_key.public_key.backend_name != plan.backend:
            raise ParameterError("secret key does not belong to the plan's backend")
        if secret_key.public_key.key_bits != plan.key_bits:
            raise ParameterError("secret key size does not match the plan")
        self._secret_key = secret_key
        self.public_key = secret_key.public_key
        self.session_id = session_id
        self.state = _State.IDLE
        self.history: list[float] = []
        self.batch_losses: list[float] = []
        self._epoch_losses: list[tuple[float, int]] = []
        self._gradients: dict[str, CiphertextVector] = {}
        self._loss: tuple[CiphertextVector, int] | None = None
        self._epoch = 0
        self._batch = 0
        self.n_iter = 0
        self.converged = False
        self.completed_rounds = 0
        self._started = False

    def start(self) -> list[Outgoing]:
        """Announce the public key and start the first round."""
        if self._started:
            raise LocalProtocolError("the coordinator has already started")
        self._started = True
        announce = PublicKeyAnnouncement(
            backend=self.plan.backend,
            public_key=self.public_key.to_bytes() if self.public_key else b"",
            plan_digest=self.plan.digest(),
        )
        out = [Outgoing(p, announce, 0) for p in self.plan.parties]
        return out + self._round_start()

    def _round_start(self) -> list[Outgoing]:
        self.round_index = _round_of(self.plan, self._epoch, self._batch)
        message = RoundStart(epoch=self._epoch, batch=self._batch)
        self._gradients, self._loss = {}, None
        self.state = _State.WAIT_ROUND
        return [Outgoing(p, message, self.round_index) for p in self.plan.parties]

    def handle(self, sender: str, envelope: Envelope) -> list[Outgoing]:
        if self.state is not _State.WAIT_ROUND:
            raise self._reject(sender, envelope, "no message is expected")
        key = self._key()
        message = envelope.message
        if isinstance(message, MaskedGradient):
            pending = tuple(p for p in self.plan.parties if p not in self._gradients)
            self._expect(sender, envelope, (MaskedGradient,), pending, self.round_index)
            self._gradients[sender] = key.ciphertext_from_bytes(message.values)
        else:
            senders = (self.plan.active,) if self._loss is None else ()
            self._expect(sender, envelope, (EncryptedLoss,), senders, self.round_index)
            assert isinstance(message, EncryptedLoss)
            loss = key.ciphertext_from_bytes(message.value)
            if loss.size != 1 or message.n_samples < 1:
                raise self._reject(sender, envelope, "the loss must be one ciphertext")
            self._loss = (loss, message.n_samples)
        if len(self._gradients) < len(self.plan.parties) or self._loss is None:
            return []
        return self._finish_round()

    def _finish_round(self) -> list[Outgoing]:
        assert self._loss is not None
        ciphertext, n_samples = self._loss
        batch_loss = float(self._secret_key.decrypt(ciphertext)[0]) / (8.0 * n_samples)
        self.batch_losses.append(batch_loss)
        self._epoch_losses.append((batch_loss, n_samples))
        out = [
            Outgoing(
                party,
                MaskedGradientDecryption(values=self._secret_key.decrypt_masked(gradient)),
                self.round_index,
            )
            for party, gradient in self._gradients.items()
        ]
        self.completed_rounds += 1
        self._batch += 1
        if self._batch < self.plan.batches_per_epoch:
            return out + self._round_start()
        total = sum(n for _, n in self._epoch_losses)
        epoch_loss = sum(loss * n for loss, n in self._epoch_losses) / total
        self._epoch_losses = []
        self.history.append(epoch_loss)
        self.n_iter = self._epoch + 1
        if len(self.history) > 1 and abs(self.history[-2] - self.history[-1]) < self.plan.tol:
            self.converged = True
        if self.converged or self.n_iter >= self.plan.max_iter:
            self.state = _State.DONE
            done = TrainingComplete(n_iter=self.n_iter, converged=self.converged)
            return out + [Outgoing(p, done, self.round_index + 1) for p in self.plan.parties]
        self._epoch += 1
        self._batch = 0
        return out + self._round_start()
