"""The three training roles as sans-I/O state machines.

A role takes a decoded :class:`~protocols.wire.Envelope` from a named sender and returns the
messages it wants sent (:class:`Outgoing`). It never touches a socket, a thread or a global. A
message the current state does not allow raises :class:`RemoteProtocolError` and leaves the role
unchanged; every check runs before any state is touched.

One mini-batch (PROTOCOL.md, Taylor-1 with labels in {0, 1}, everything scaled by 4):

1. every passive party ``j`` sends ``[[u_j]]``, ``u_j = X_j w_j`` (and, in the epoch's last
   batch, ``[[sum u_j^2]]`` over the epoch);
2. the active party forms ``[[4d]] = sum_j [[u_j]] + Enc(u_B + 2 - 4y)`` (a *fresh* encryption,
   so no passive party can subtract its own ciphertext and read the label term) and sends it;
3. every party sends ``[[X^T 4d + r]]`` with a fresh mask ``r`` to the coordinator, which
   returns the decryption to that party only; the party unmasks, divides by ``4m``, adds
   ``l2 * w`` and steps its own optimizer;
4. in the epoch's last batch the active party sends ``[[8 * sum of the epoch's Taylor
   losses]]``; the coordinator decrypts only this epoch aggregate and uses it for ``tol``.

With several passive parties the loss needs the cross terms ``sum_s u_i,s u_j,s``: the active
party sends passive ``i`` the (re-randomised) sum of the later passive parties' encrypted scores,
and ``i`` returns, in the epoch's last batch, one ciphertext ``[[sum_s u_i,s * U_later,s]]`` over
the epoch.

The loss is an epoch aggregate, not one per batch: the coordinator learns less, and packed
backends blind the encrypted sum once per epoch instead of once per batch.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from protocols import get_backend
from protocols.backend import CiphertextVector, Mask, PublicKey, SecretKey
from protocols.errors import (
    DecryptionError,
    LocalProtocolError,
    ParameterError,
    RemoteProtocolError,
)
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
from vfl.plan import SessionPlan, TrainingPlan

__all__ = ["Outgoing", "Coordinator", "ActiveParty", "PassiveParty"]

_LOG2 = math.log(2.0)
#: Plaintext multiplications a ciphertext has been through, per field (pins the scale/level).
FRESH, PRODUCT = 0, 1
_T = TypeVar("_T")


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


def _round_of(plan: TrainingPlan, epoch: int, batch: int) -> int:
    return 1 + epoch * plan.batches_per_epoch + batch


class _Role:
    """Shared plumbing: session/round/sender checks and key loading."""

    def __init__(self, name: str, plan: SessionPlan) -> None:
        self.name = name
        self.plan: SessionPlan = plan
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
            raise self._reject(
                sender, envelope, f"expected it from {', '.join(senders) or 'nobody'}"
            )
        if envelope.session_id != self.session_id:
            raise self._reject(sender, envelope, "it belongs to another session")
        if envelope.round_index != round_index:
            raise self._reject(sender, envelope, f"expected round {round_index}")

    def _key(self) -> PublicKey:
        if self.public_key is None:
            raise LocalProtocolError(f"{self.name} has no public key yet")
        return self.public_key

    def _load_ciphertext(
        self, sender: str, envelope: Envelope, data: bytes, size: int, depth: int, kind: str
    ) -> CiphertextVector:
        try:
            vector = self._key().ciphertext_from_bytes(data, depth=depth, kind=kind)
        except RemoteProtocolError as exc:  # name the sender and the message
            raise self._reject(sender, envelope, str(exc)) from None
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

    plan: TrainingPlan

    def __init__(
        self, name: str, features: np.ndarray, plan: TrainingPlan, *, fit_intercept: bool
    ) -> None:
        super().__init__(name, plan)
        self.plan = plan
        features = np.asarray(features, dtype=np.float64)
        expected = plan.n_features[plan.parties.index(name)]
        if features.ndim != 2 or features.shape != (plan.n_samples, expected):
            raise ParameterError(
                f"party {name!r}: features must be a ({plan.n_samples}, {expected}) array as "
                f"the plan says, got {features.shape}"
            )
        self._features = features
        self.fit_intercept = fit_intercept
        self.n_features = expected
        self.weights = np.zeros(plan.gradient_size(name))
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

    def _masked_gradient(
        self, rows: np.ndarray, residual: CiphertextVector
    ) -> tuple[Outgoing, Mask]:
        key = self._key()
        gradient = key.dot_columns(self._design(rows), residual)
        masked, mask = key.mask(gradient)
        message = MaskedGradient(values=key.ciphertext_to_bytes(masked))
        return Outgoing(self.plan.coordinator, message, self.round_index), mask

    def _handle_common(self, sender: str, envelope: Envelope) -> bool:
        """Announcement, completion and the gradient step. True when handled."""
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
        if self.state is _State.WAIT_GRADIENT:
            self._expect(
                sender,
                envelope,
                (MaskedGradientDecryption,),
                (self.plan.coordinator,),
                self.round_index,
            )
            message = envelope.message
            assert isinstance(message, MaskedGradientDecryption) and self._mask is not None
            raw = self._key().unmask(message.values, self._mask)  # checks the count
            gradient = raw / (4.0 * self._batch.size)
            penalty = self.plan.l2 * self.weights
            if self.fit_intercept:
                penalty[-1] = 0.0  # the intercept is not regularised
            self.weights = self._optimizer.step(self.weights, gradient + penalty)
            self._mask = None
            self.state = _State.IDLE
            return True
        return False

    def _start_round(self, sender: str, envelope: Envelope) -> tuple[np.ndarray, bool]:
        """Check a RoundStart; the batch's rows and whether it closes the epoch (no changes)."""
        self._expect(
            sender, envelope, (RoundStart,), (self.plan.coordinator,), self.round_index + 1
        )
        message = envelope.message
        assert isinstance(message, RoundStart)
        valid = (
            0 <= message.epoch < self.plan.max_iter
            and 0 <= message.batch < self.plan.batches_per_epoch
        )
        if not valid or _round_of(self.plan, message.epoch, message.batch) != envelope.round_index:
            raise self._reject(sender, envelope, "epoch/batch do not match the round")
        rows = self.plan.batch_indices(message.epoch, message.batch)
        return rows, self.plan.closes_epoch(message.batch)


class PassiveParty(_Party):
    """Holds features only; sees ciphertexts and its own gradient.

    Parameters
    ----------
    name, features, plan:
        Its name in the plan, its aligned training features ``(n_samples, n_features)``, the plan.
    """

    def __init__(self, name: str, features: np.ndarray, plan: TrainingPlan) -> None:
        if name not in plan.passives:
            raise ParameterError(f"{name!r} is not a passive party of this plan")
        super().__init__(name, features, plan, fit_intercept=False)
        position = plan.passives.index(name)
        self._sends_cross_term = position < len(plan.passives) - 1
        self._own_scores = np.empty(0)
        self._closing = False
        self._square_sum = 0.0  # sum of u^2 over the epoch so far (plaintext, our own scores)
        self._cross_sum: CiphertextVector | None = None  # [[sum u * U_later]] over the epoch

    def handle(self, sender: str, envelope: Envelope) -> list[Outgoing]:
        if self._handle_common(sender, envelope):
            return []
        if self.state is _State.IDLE:
            rows, closing = self._start_round(sender, envelope)
            key = self._key()
            scores = self._scores(rows)
            square_sum = self._square_sum + float(scores @ scores)
            squared = key.ciphertext_to_bytes(key.encrypt_total(square_sum)) if closing else b""
            scores_message = EncryptedPartialScores(
                scores=key.ciphertext_to_bytes(key.encrypt(scores)), squared_sum=squared
            )
            self._batch, self._own_scores, self._closing = rows, scores, closing
            self._square_sum = 0.0 if closing else square_sum
            self.round_index = envelope.round_index
            self.state = _State.WAIT_RESIDUAL
            return [Outgoing(self.plan.active, scores_message, self.round_index)]
        if self.state is _State.WAIT_RESIDUAL:
            self._expect(
                sender, envelope, (EncryptedResidual,), (self.plan.active,), self.round_index
            )
            message = envelope.message
            assert isinstance(message, EncryptedResidual)
            size = self._batch.size
            residual = self._load_ciphertext(
                sender, envelope, message.residual, size, FRESH, "vector"
            )
            later: CiphertextVector | None = None
            if self._sends_cross_term:
                later = self._load_ciphertext(
                    sender, envelope, message.later_scores, size, FRESH, "vector"
                )
            elif message.later_scores:
                raise self._reject(sender, envelope, "unexpected later_scores")
            gradient, mask = self._masked_gradient(self._batch, residual)
            out = [gradient]
            cross_sum = self._cross_sum
            if later is not None:
                key = self._key()
                product = key.dot_columns(self._own_scores[:, None], later)
                cross_sum = product if cross_sum is None else key.add(cross_sum, product)
                if self._closing:
                    cross = key.ciphertext_to_bytes(self._cross_term(cross_sum))
                    message_out = EncryptedCrossTerm(value=cross)
                    out.append(Outgoing(self.plan.active, message_out, self.round_index))
                    cross_sum = None
            self._cross_sum = cross_sum
            self._mask = mask
            self.state = _State.WAIT_GRADIENT
            return out
        raise self._reject(sender, envelope, "no message is expected")

    def _cross_term(self, cross_sum: CiphertextVector) -> CiphertextVector:
        # Re-randomised: the label party made every [[later]] and could otherwise test guesses
        # of our scores against the deterministic sum of products.
        return self._key().rerandomize(cross_sum)


class ActiveParty(_Party):
    """Holds features and the binary labels; forms the encrypted residual and loss.

    The intercept lives here. Labels never leave this object in any form but inside a fresh
    encryption added to the passive parties' scores.
    """

    def __init__(
        self, name: str, features: np.ndarray, labels: np.ndarray, plan: TrainingPlan
    ) -> None:
        if name != plan.active:
            raise ParameterError(f"{name!r} is not the active party of this plan")
        super().__init__(name, features, plan, fit_intercept=True)
        labels = np.asarray(labels, dtype=np.float64).ravel()
        if labels.shape != (plan.n_samples,) or not np.isin(labels, (0.0, 1.0)).all():
            raise ParameterError(f"active party {name!r} needs {plan.n_samples} labels in {{0, 1}}")
        self._labels = labels
        self._partial: dict[str, tuple[CiphertextVector, CiphertextVector | None]] = {}
        self._cross: dict[str, CiphertextVector] = {}
        self._closing = False
        self._loss: CiphertextVector | None = None  # [[8 * Taylor loss]] over the epoch so far
        self._own_loss = 0.0  # the part of it that only involves our own scores (plaintext)

    def handle(self, sender: str, envelope: Envelope) -> list[Outgoing]:
        if self._handle_common(sender, envelope):
            return []
        if self.state is _State.IDLE:
            rows, closing = self._start_round(sender, envelope)
            self._batch, self._closing = rows, closing
            self._partial, self._cross = {}, {}
            self.round_index = envelope.round_index
            self.state = _State.WAIT_SCORES
            return []
        if self.state is _State.WAIT_SCORES:
            pending = tuple(p for p in self.plan.passives if p not in self._partial)
            self._expect(sender, envelope, (EncryptedPartialScores,), pending, self.round_index)
            message = envelope.message
            assert isinstance(message, EncryptedPartialScores)
            size = self._batch.size
            scores = self._load_ciphertext(sender, envelope, message.scores, size, FRESH, "vector")
            squared: CiphertextVector | None = None
            if self._closing:
                squared = self._load_ciphertext(
                    sender, envelope, message.squared_sum, 1, FRESH, "total"
                )
            elif message.squared_sum:
                raise self._reject(sender, envelope, "squared_sum before the epoch's last batch")
            partial = {**self._partial, sender: (scores, squared)}
            if len(partial) < len(self.plan.passives):
                self._partial = partial
                return []
            # everything that may raise comes first; state changes only afterwards
            out, loss, own_loss, mask = self._residual_round(partial)
            waits_for_cross = self._closing and len(self.plan.passives) > 1
            if self._closing:
                key = self._key()
                for _, square in partial.values():
                    assert square is not None
                    loss = key.add(loss, square)
                loss = key.add(loss, key.encrypt_total(own_loss))
                if not waits_for_cross:
                    out = [*out, self._loss_message(loss)]
            self._partial, self._mask = partial, mask
            self._loss = loss if not self._closing or waits_for_cross else None
            self._own_loss = 0.0 if self._closing else own_loss
            self.state = _State.WAIT_CROSS if waits_for_cross else _State.WAIT_GRADIENT
            return out
        if self.state is _State.WAIT_CROSS:
            pending = tuple(p for p in self.plan.passives[:-1] if p not in self._cross)
            self._expect(sender, envelope, (EncryptedCrossTerm,), pending, self.round_index)
            message = envelope.message
            assert isinstance(message, EncryptedCrossTerm)
            term = self._load_ciphertext(sender, envelope, message.value, 1, PRODUCT, "total")
            cross = {**self._cross, sender: term}
            if len(cross) < len(self.plan.passives) - 1:
                self._cross = cross
                return []
            key = self._key()
            assert self._loss is not None
            loss = self._loss
            for value in cross.values():
                loss = key.add(loss, key.add(value, value))  # cross terms appear twice in z^2
            message_out = self._loss_message(loss)
            self._cross = cross
            self._loss = None
            self.state = _State.WAIT_GRADIENT
            return [message_out]
        raise self._reject(sender, envelope, "no message is expected")

    def _loss_message(self, loss: CiphertextVector) -> Outgoing:
        key = self._key()
        message = EncryptedLoss(value=key.ciphertext_to_bytes(key.prepare_decryption(loss)))
        return Outgoing(self.plan.coordinator, message, self.round_index)

    def _add_label_term(self, total: CiphertextVector, term: np.ndarray) -> CiphertextVector:
        # The label term enters as a *fresh* encryption: add_plain would be deterministic and
        # a lone passive party could subtract its own [[u]] and read u_B + 2 - 4y.
        key = self._key()
        return key.add(total, key.encrypt(term))

    def _residual_round(
        self, partial: dict[str, tuple[CiphertextVector, CiphertextVector | None]]
    ) -> tuple[list[Outgoing], CiphertextVector, float, Mask]:
        """Residual to every passive party, own masked gradient (and its mask), and the epoch's
        loss so far (the encrypted part, unreduced, and the plaintext part of our own scores).
        Changes no state."""
        key = self._key()
        rows = self._batch
        own = self._scores(rows)
        labels = self._labels[rows]
        passives = self.plan.passives
        encrypted = [partial[p][0] for p in passives]
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
        gradient, mask = self._masked_gradient(rows, residual)
        out.append(gradient)
        # 8 * Taylor loss summed over the batch, with y' = 2y - 1 and z = u_B + U:
        #   8 log 2 - 4 y' z + z^2 = [8 log 2 - 4 y' u_B + u_B^2] + (2 u_B - 4 y') U + U^2
        # The U^2 sums (and cross terms) come from the passive parties at the epoch's end.
        signed = 2.0 * labels - 1.0
        loss = key.dot_columns((2.0 * own - 4.0 * signed)[:, None], total)
        if self._loss is not None:
            loss = key.add(self._loss, loss)
        own_loss = self._own_loss + float(np.sum(8.0 * _LOG2 - 4.0 * signed * own + own * own))
        return out, loss, own_loss, mask


class Coordinator(_Role):
    """Holds the secret key; decrypts only masked gradients and the epoch's aggregate loss.

    It never sees a weight, a feature or a label, and every gradient it decrypts is masked (by a
    value uniform in Z_n with Paillier; statistically with CKKS, see ``docs/security.md``). It
    decrypts each vector on receipt, so a vector its key refuses is rejected before any state
    changes.
    """

    plan: TrainingPlan

    def __init__(self, name: str, plan: TrainingPlan, secret_key: SecretKey, session_id: bytes):
        if name != plan.coordinator:
            raise ParameterError(f"{name!r} is not the coordinator of this plan")
        super().__init__(name, plan)
        self.plan = plan
        if secret_key.public_key.backend_name != plan.backend:
            raise ParameterError("secret key does not belong to the plan's backend")
        if secret_key.public_key.key_bits != plan.key_bits:
            raise ParameterError("secret key size does not match the plan")
        self._secret_key = secret_key
        self.public_key = secret_key.public_key
        self.session_id = session_id
        self.state = _State.IDLE
        self.history: list[float] = []
        self._gradients: dict[str, bytes] = {}  # masked decryptions, ready to return
        self._loss: float | None = None  # the epoch's mean loss, decrypted
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
            public_key=self._key().to_bytes(),
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
        message = envelope.message
        if isinstance(message, MaskedGradient):
            pending = tuple(p for p in self.plan.parties if p not in self._gradients)
            self._expect(sender, envelope, (MaskedGradient,), pending, self.round_index)
            # the size is pinned by the plan: a party cannot have a residual vector decrypted
            size = self.plan.gradient_size(sender)
            gradient = self._load_ciphertext(
                sender, envelope, message.values, size, PRODUCT, "masked"
            )
            released = self._decrypt(sender, envelope, self._secret_key.decrypt_masked, gradient)
            self._gradients = {**self._gradients, sender: released}
        else:
            # the loss is an epoch aggregate: it comes only with the epoch's last batch
            closing = self.plan.closes_epoch(self._batch)
            senders = (self.plan.active,) if closing and self._loss is None else ()
            self._expect(sender, envelope, (EncryptedLoss,), senders, self.round_index)
            assert isinstance(message, EncryptedLoss)
            loss = self._load_ciphertext(sender, envelope, message.value, 1, PRODUCT, "prepared")
            total = self._decrypt(sender, envelope, self._secret_key.decrypt, loss)
            self._loss = float(total[0]) / (8.0 * self.plan.n_samples)  # every sample once
        if len(self._gradients) < len(self.plan.parties):
            return []
        if self.plan.closes_epoch(self._batch) and self._loss is None:
            return []
        return self._finish_round()

    def _decrypt(
        self,
        sender: str,
        envelope: Envelope,
        decrypt: Callable[[CiphertextVector], _T],
        vector: CiphertextVector,
    ) -> _T:
        """Decrypt on receipt, so that a vector the key refuses (say, an unblinded packed one)
        is the sender's protocol error and changes nothing here."""
        try:
            return decrypt(vector)
        except DecryptionError as exc:
            raise self._reject(sender, envelope, str(exc)) from None

    def _finish_round(self) -> list[Outgoing]:
        epoch_loss = self._loss if self._loss is not None else 0.0
        out = [
            Outgoing(party, MaskedGradientDecryption(values=payload), self.round_index)
            for party, payload in self._gradients.items()
        ]
        self.completed_rounds += 1
        self._batch += 1
        if self._batch < self.plan.batches_per_epoch:
            return out + self._round_start()
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
