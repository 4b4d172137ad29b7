"""One party's share of a fitted model: its weights and its local preprocessing.

Each party saves and loads only its own share (``<dir>/<party>/party.json``). No key material
exists in a share: keys are made fresh for every training or scoring session.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from protocols.errors import DataError, ParameterError
from vfl.preprocessing import PartyPreprocessor

__all__ = ["PartyModel", "check_party_name", "FORMAT_VERSION"]

FORMAT_VERSION = 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_party_name(name: object) -> str:
    """Party names double as folder names: letters, digits, ``_.-``; at most 64 characters."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ParameterError(
            f"party name {name!r} must be 1-64 characters of letters, digits, '_', '.', '-' "
            "and start with a letter or digit"
        )
    return name


@dataclass
class PartyModel:
    """A party's fitted weights (and intercept, at the active party) plus its preprocessor."""

    name: str
    role: str  # "active" or "passive"
    coef: np.ndarray
    intercept: float
    preprocessor: PartyPreprocessor
    metadata: dict[str, Any] = field(default_factory=dict)

    def features(self, frame: pd.DataFrame) -> np.ndarray:
        """Apply this party's preprocessing to its own raw columns."""
        matrix = self.preprocessor.transform(frame)
        if matrix.shape[1] != self.coef.size:
            raise DataError(
                f"party {self.name!r}: preprocessing gave {matrix.shape[1]} columns, "
                f"the model has {self.coef.size}"
            )
        return matrix

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "role": self.role,
            "coef": [float(v) for v in self.coef],
            "intercept": float(self.intercept),
            "feature_names": list(self.preprocessor.feature_names_),
            "preprocessor": self.preprocessor.to_dict(),
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PartyModel:
        try:
            if data["format_version"] != FORMAT_VERSION:
                raise DataError(f"unsupported party model format {data['format_version']!r}")
            role = data["role"]
            if role not in ("active", "passive"):
                raise DataError(f"unknown role {role!r} in party model")
            coef = np.asarray(data["coef"], dtype=np.float64)
            if coef.ndim != 1 or not np.all(np.isfinite(coef)):
                raise DataError("party model weights must be a finite 1-D list")
            model = cls(
                name=check_party_name(data["name"]),
                role=role,
                coef=coef,
                intercept=float(data["intercept"]),
                preprocessor=PartyPreprocessor.from_dict(data["preprocessor"]),
                metadata=dict(data.get("metadata", {})),
            )
        except (KeyError, TypeError) as exc:
            raise DataError(f"party model file is incomplete or malformed ({exc})") from None
        if model.preprocessor.n_features_out_ != coef.size:
            raise DataError("party model weights do not match its preprocessing")
        return model

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``<directory>/<name>/party.json`` atomically and return its path."""
        folder = Path(directory) / self.name
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "party.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike[str], name: str) -> PartyModel:
        """Read the share of party ``name`` saved under ``directory``."""
        path = Path(directory) / check_party_name(name) / "party.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise DataError(f"no saved model for party {name!r} under {directory}") from None
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} is not valid JSON ({exc.msg})") from None
        model = cls.from_dict(data)
        if model.name != name:
            raise DataError(f"{path} holds party {model.name!r}, not {name!r}")
        return model
