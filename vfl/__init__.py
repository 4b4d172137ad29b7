"""Vertical federated logistic regression under homomorphic encryption.

Recipes: :class:`VerticalLogisticRegression` (fit/predict over parties' aligned frames) and
:func:`vfl.datasets.make_bank_retailer` (a synthetic bank + retailer federation). Low-level
roles live in :mod:`vfl.roles` and :mod:`vfl.scoring`; the wire messages in :mod:`vfl.messages`.
"""

from __future__ import annotations

from protocols.errors import (
    DataError,
    DecryptionError,
    InsecureParametersError,
    LocalProtocolError,
    NotFittedError,
    ParameterError,
    ProtocolError,
    RemoteProtocolError,
    TransportError,
    VFLError,
)
from protocols.transport import InMemoryTransport, TranscriptEntry
from vfl.estimator import VerticalLogisticRegression
from vfl.model import PartyModel
from vfl.plan import ScoringPlan, TrainingPlan
from vfl.preprocessing import PartyPreprocessor
from vfl.roles import ActiveParty, Coordinator, PassiveParty
from vfl.scoring import ActiveScorer, PassiveScorer, ScoringCoordinator

__all__ = [
    "VerticalLogisticRegression",
    "PartyModel",
    "PartyPreprocessor",
    "TrainingPlan",
    "ScoringPlan",
    "ActiveParty",
    "PassiveParty",
    "Coordinator",
    "ActiveScorer",
    "PassiveScorer",
    "ScoringCoordinator",
    "InMemoryTransport",
    "TranscriptEntry",
    "VFLError",
    "ParameterError",
    "InsecureParametersError",
    "DataError",
    "NotFittedError",
    "ProtocolError",
    "LocalProtocolError",
    "RemoteProtocolError",
    "DecryptionError",
    "TransportError",
]

__version__ = "0.1.0"
