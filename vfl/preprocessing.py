"""Per-party local preprocessing: imputation, standardisation and one-hot encoding.

In vertical federated learning every party prepares its own columns before training, and the
statistics it learns (medians, means, categories, ...) never leave that party. They are learned
on the training rows only, so nothing about validation or scoring rows leaks into the model, and
they are saved next to the model with :meth:`PartyPreprocessor.save` so scoring applies exactly
the same transformation.

Column kinds
------------
A column is *categorical* if it is listed in ``categorical`` or has an object, string, category
or bool dtype; any other numeric dtype is *numeric*. An object column is therefore categorical
even when it happens to hold numbers: declare nothing and you get one-hot encoding, never a
silent string-to-number conversion. Other dtypes (datetimes, complex, ...) are rejected.

Error messages name columns and dtypes but never the data values themselves.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from protocols.errors import DataError, NotFittedError, ParameterError

__all__ = ["PartyPreprocessor"]

_FORMAT = "vfl.PartyPreprocessor"
_VERSION = 1

# A category must survive a JSON round trip unchanged, so only JSON scalar types are allowed.
Category = str | int | float | bool


@dataclass(frozen=True)
class _NumericStats:
    median: float
    mean: float
    std: float


@dataclass(frozen=True)
class _CategoricalStats:
    categories: tuple[Category, ...]
    mode: Category


@dataclass(frozen=True)
class _FittedState:
    columns: tuple[str, ...]
    numeric: dict[str, _NumericStats]
    categorical: dict[str, _CategoricalStats]


def _py_scalar(value: Any) -> Any:
    """numpy scalar -> the equivalent Python scalar (so it can be hashed, sorted and dumped)."""
    return value.item() if isinstance(value, np.generic) else value


def _sorted_categories(values: set[Category]) -> tuple[Category, ...]:
    try:
        return tuple(sorted(values))  # type: ignore[type-var]
    except TypeError:
        # Mixed types (e.g. 1 and "a") have no natural order; any fixed order will do.
        return tuple(sorted(values, key=lambda v: (type(v).__name__, repr(v))))


def _is_category_kind(series: pd.Series[Any]) -> bool:
    dtype = series.dtype
    return (
        pd.api.types.is_object_dtype(dtype)
        or pd.api.types.is_string_dtype(dtype)
        or isinstance(dtype, pd.CategoricalDtype)
        or pd.api.types.is_bool_dtype(dtype)
    )


def _is_plain_numeric(series: pd.Series[Any]) -> bool:
    dtype = series.dtype
    return (
        pd.api.types.is_numeric_dtype(dtype)
        and not pd.api.types.is_bool_dtype(dtype)
        and not pd.api.types.is_complex_dtype(dtype)
    )


def _check_frame(frame: Any, action: str) -> pd.DataFrame:
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"{action} expects a pandas DataFrame; got {type(frame).__name__}")
    names = list(frame.columns)
    non_str = [repr(c) for c in names if not isinstance(c, str)]
    if non_str:
        raise DataError(f"column names must be strings; got {', '.join(non_str)}")
    if len(set(names)) != len(names):
        duplicated = sorted({c for c in names if names.count(c) > 1})
        raise DataError(f"duplicate column names: {', '.join(duplicated)}")
    return frame


def _missing_mask(series: pd.Series[Any]) -> npt.NDArray[np.bool_]:
    return np.asarray(series.isna().to_numpy(), dtype=bool)


def _numeric_values(
    series: pd.Series[Any], column: str, missing: npt.NDArray[np.bool_]
) -> npt.NDArray[np.float64]:
    """Column values as float64 with NaN where missing; raise if anything else is not a number."""
    if _is_plain_numeric(series) or pd.api.types.is_bool_dtype(series.dtype):
        values = np.asarray(series.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)
    else:
        # A column that was numeric at fit but arrives as text (e.g. read from CSV as strings):
        # accept values that parse as numbers, refuse anything that does not.
        try:
            converted = pd.to_numeric(series.astype(object), errors="coerce")
        except (TypeError, ValueError) as exc:
            raise DataError(f"column '{column}' is numeric but holds non-numeric values") from exc
        values = np.asarray(
            pd.Series(converted).to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64
        )
        if bool(np.any(np.isnan(values) & ~missing)):
            raise DataError(f"column '{column}' is numeric but holds non-numeric values")
    if bool(np.any(np.isinf(values))):
        raise DataError(f"column '{column}' holds infinite values; expected finite numbers")
    return values


class PartyPreprocessor:
    """Impute, standardise and one-hot encode one party's feature columns.

    ``fit`` learns, from the training rows only: the median, mean and standard deviation of
    each numeric column and the categories and mode of each categorical column. ``transform``
    then maps any frame with the same columns to a float64 matrix:

    * numeric columns: missing values -> training median, then ``(x - mean) / std`` with the
      mean and (population) std of the imputed training column; a constant column gets
      ``std = 1``;
    * categorical columns: missing values -> training mode, then one indicator column per
      training category, in sorted order; a category not seen in training encodes as all
      zeros.

    Output columns follow the input column order; see :attr:`feature_names_`.

    Parameters
    ----------
    categorical : sequence of str, optional
        Columns to one-hot encode even if their dtype is numeric (e.g. integer region codes).
        Object, string, category and bool columns are categorical anyway.
    strict : bool, default=False
        Refuse missing values (NaN/None) instead of imputing them, at fit and at transform.

    Raises
    ------
    ParameterError
        If ``categorical`` is a single string or holds non-strings, or ``strict`` is not a
        bool.

    Security
    --------
    The fitted statistics describe the party's private data (a median is a data value).
    Keep them, and the files written by :meth:`save`, with the party that owns the data.

    Examples
    --------
    >>> frame = pd.DataFrame({"income": [10.0, None, 30.0], "job": ["a", "b", "a"]})
    >>> prep = PartyPreprocessor().fit(frame)
    >>> prep.feature_names_
    ['income', 'job=a', 'job=b']
    >>> prep.transform(frame).round(3).tolist()
    [[-1.225, 1.0, 0.0], [0.0, 0.0, 1.0], [1.225, 1.0, 0.0]]
    """

    def __init__(self, *, categorical: Sequence[str] | None = None, strict: bool = False) -> None:
        if isinstance(categorical, str):
            raise ParameterError(
                "categorical must be a sequence of column names, not a single string; "
                f"did you mean categorical=[{categorical!r}]?"
            )
        if categorical is not None:
            bad = [type(c).__name__ for c in categorical if not isinstance(c, str)]
            if bad:
                raise ParameterError(f"categorical must hold column names (str); got {bad}")
        if not isinstance(strict, bool):
            raise ParameterError(f"strict must be a bool; got {type(strict).__name__}")
        # Parameters are stored as given (as a list) and only interpreted in fit.
        self.categorical: list[str] | None = None if categorical is None else list(categorical)
        self.strict = strict
        self._state: _FittedState | None = None

    def __repr__(self) -> str:
        return f"PartyPreprocessor(categorical={self.categorical!r}, strict={self.strict!r})"

    # ----------------------------------------------------------------------------- fitted state

    def _fitted(self) -> _FittedState:
        if self._state is None:
            raise NotFittedError("this PartyPreprocessor is not fitted yet; call fit first")
        return self._state

    @property
    def feature_names_in_(self) -> list[str]:
        """Input column names seen at fit, in order."""
        return list(self._fitted().columns)

    @property
    def numeric_columns_(self) -> list[str]:
        """Input columns treated as numeric, in input order."""
        state = self._fitted()
        return [c for c in state.columns if c in state.numeric]

    @property
    def categorical_columns_(self) -> list[str]:
        """Input columns treated as categorical, in input order."""
        state = self._fitted()
        return [c for c in state.columns if c in state.categorical]

    @property
    def feature_names_(self) -> list[str]:
        """Output column names: ``col`` for numeric columns, ``col=category`` for indicators."""
        state = self._fitted()
        names: list[str] = []
        for column in state.columns:
            if column in state.numeric:
                names.append(column)
            else:
                names.extend(f"{column}={c}" for c in state.categorical[column].categories)
        return names

    @property
    def n_features_out_(self) -> int:
        """Number of output columns of :meth:`transform`."""
        state = self._fitted()
        return len(state.numeric) + sum(len(s.categories) for s in state.categorical.values())

    # -------------------------------------------------------------------------------- fit

    def fit(self, frame: pd.DataFrame) -> PartyPreprocessor:
        """Learn the imputation, scaling and encoding statistics from training rows.

        Parameters
        ----------
        frame : pandas.DataFrame
            Training rows, feature columns only (no ID or label column). Not modified.

        Returns
        -------
        PartyPreprocessor
            ``self``, fitted.

        Raises
        ------
        DataError
            If ``frame`` is not a DataFrame, has no columns or no rows, has duplicate or
            non-string column names, lacks a column listed in ``categorical``, has a column of
            unsupported dtype, a column that is entirely missing, an infinite value in a numeric
            column, a category that is not a str/int/float/bool, or (in strict mode) any missing
            value.
        """
        frame = _check_frame(frame, "fit")
        if frame.shape[1] == 0:
            raise DataError("fit needs at least one feature column; got a frame with none")
        if frame.shape[0] == 0:
            raise DataError("fit needs at least one row; got an empty frame")
        declared = set(self.categorical or ())
        absent = sorted(declared - set(frame.columns))
        if absent:
            raise DataError(f"columns listed as categorical are not in the frame: {absent}")

        numeric: dict[str, _NumericStats] = {}
        categorical: dict[str, _CategoricalStats] = {}
        for column in frame.columns:
            series = frame[column]
            missing = _missing_mask(series)
            if missing.all():
                raise DataError(f"column '{column}' is entirely missing; nothing to learn from")
            if self.strict and missing.any():
                raise DataError(
                    f"column '{column}' has {int(missing.sum())} missing value(s) and strict "
                    "mode does not impute"
                )
            if column in declared or _is_category_kind(series):
                categorical[column] = self._fit_categorical(series, column, missing)
            elif _is_plain_numeric(series):
                numeric[column] = self._fit_numeric(series, column, missing)
            else:
                raise DataError(
                    f"column '{column}' has unsupported dtype {series.dtype}; expected numeric, "
                    "bool, string, object or category"
                )
        self._state = _FittedState(tuple(frame.columns), numeric, categorical)
        return self

    @staticmethod
    def _fit_numeric(
        series: pd.Series[Any], column: str, missing: npt.NDArray[np.bool_]
    ) -> _NumericStats:
        values = _numeric_values(series, column, missing)
        median = float(np.median(values[~missing]))
        imputed = np.where(missing, median, values)
        mean = float(imputed.mean())
        # Constant columns carry no information; std 1 maps them to zeros instead of NaN.
        std = float(imputed.std()) if float(np.ptp(imputed)) > 0 else 1.0
        if not std > 0:
            std = 1.0
        return _NumericStats(median=median, mean=mean, std=std)

    @staticmethod
    def _fit_categorical(
        series: pd.Series[Any], column: str, missing: npt.NDArray[np.bool_]
    ) -> _CategoricalStats:
        counts: dict[Category, int] = {}
        for raw in series[~missing].tolist():
            value = _py_scalar(raw)
            if not isinstance(value, (str, int, float, bool)) or (
                isinstance(value, float) and not math.isfinite(value)
            ):
                raise DataError(
                    f"column '{column}' holds a category of type {type(value).__name__}; "
                    "categories must be str, int, finite float or bool"
                )
            counts[value] = counts.get(value, 0) + 1
        categories = _sorted_categories(set(counts))
        # Ties for the mode go to the first category in sorted order, so fits are reproducible.
        top = max(counts.values())
        mode = next(c for c in categories if counts[c] == top)
        return _CategoricalStats(categories=categories, mode=mode)

    # -------------------------------------------------------------------------- transform

    def transform(self, frame: pd.DataFrame) -> npt.NDArray[np.float64]:
        """Apply the training statistics to ``frame``.

        Parameters
        ----------
        frame : pandas.DataFrame
            Rows to transform. It must hold every column seen at fit (in any order); other
            columns are ignored. Not modified.

        Returns
        -------
        numpy.ndarray of shape (n_rows, n_features_out_), dtype float64

        Raises
        ------
        NotFittedError
            If called before :meth:`fit`.
        DataError
            If ``frame`` is not a DataFrame, has duplicate or non-string column names, lacks
            columns seen at fit (they are named), has non-numeric or infinite values in a
            numeric column, unhashable values in a categorical column, or (in strict mode) any
            missing value.
        """
        state = self._fitted()
        frame = _check_frame(frame, "transform")
        absent = [c for c in state.columns if c not in frame.columns]
        if absent:
            raise DataError(f"frame is missing columns seen at fit: {absent}")

        n_rows = frame.shape[0]
        out = np.zeros((n_rows, self.n_features_out_), dtype=np.float64)
        position = 0
        for column in state.columns:
            series = frame[column]
            missing = _missing_mask(series)
            if self.strict and missing.any():
                raise DataError(
                    f"column '{column}' has {int(missing.sum())} missing value(s) and strict "
                    "mode does not impute"
                )
            if column in state.numeric:
                stats = state.numeric[column]
                values = _numeric_values(series, column, missing)
                imputed = np.where(missing, stats.median, values)
                out[:, position] = (imputed - stats.mean) / stats.std
                position += 1
            else:
                cat_stats = state.categorical[column]
                codes = self._category_codes(series, column, missing, cat_stats)
                seen = codes >= 0
                out[np.flatnonzero(seen), position + codes[seen]] = 1.0
                position += len(cat_stats.categories)
        return out

    @staticmethod
    def _category_codes(
        series: pd.Series[Any],
        column: str,
        missing: npt.NDArray[np.bool_],
        stats: _CategoricalStats,
    ) -> npt.NDArray[np.int64]:
        """Index of each row's category in ``stats.categories``; -1 for unseen categories."""
        lookup: dict[Hashable, int] = {c: i for i, c in enumerate(stats.categories)}
        mode_code = lookup[stats.mode]
        codes = np.empty(series.shape[0], dtype=np.int64)
        try:
            for row, (value, is_missing) in enumerate(zip(series.tolist(), missing)):
                codes[row] = mode_code if is_missing else lookup.get(value, -1)
        except TypeError as exc:
            raise DataError(f"column '{column}' holds unhashable values") from exc
        return codes

    def fit_transform(self, frame: pd.DataFrame) -> npt.NDArray[np.float64]:
        """Fit on ``frame`` and return its transformation.

        Parameters
        ----------
        frame : pandas.DataFrame
            Training rows, feature columns only. Not modified.

        Returns
        -------
        numpy.ndarray of shape (n_rows, n_features_out_), dtype float64

        Raises
        ------
        DataError
            As for :meth:`fit` and :meth:`transform`.
        """
        return self.fit(frame).transform(frame)

    # ----------------------------------------------------------------------- persistence

    def to_dict(self) -> dict[str, Any]:
        """The fitted preprocessor as a JSON-serialisable dict.

        Returns
        -------
        dict
            Keys ``format``, ``version``, ``strict``, ``categorical`` (the constructor
            argument), ``columns`` (input order), ``medians``, ``means``, ``stds`` (per numeric
            column), ``categories`` and ``modes`` (per categorical column).

        Raises
        ------
        NotFittedError
            If called before :meth:`fit`.
        """
        state = self._fitted()
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "strict": self.strict,
            "categorical": None if self.categorical is None else list(self.categorical),
            "columns": list(state.columns),
            "medians": {c: s.median for c, s in state.numeric.items()},
            "means": {c: s.mean for c, s in state.numeric.items()},
            "stds": {c: s.std for c, s in state.numeric.items()},
            "categories": {c: list(s.categories) for c, s in state.categorical.items()},
            "modes": {c: s.mode for c, s in state.categorical.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PartyPreprocessor:
        """Rebuild a fitted preprocessor from :meth:`to_dict` output.

        Parameters
        ----------
        data : dict
            As produced by :meth:`to_dict` (possibly after a JSON round trip).

        Returns
        -------
        PartyPreprocessor
            A fitted preprocessor whose ``transform`` equals the original's.

        Raises
        ------
        DataError
            If ``data`` is not a valid serialised preprocessor (wrong format or version,
            missing keys, inconsistent columns, non-finite or non-positive statistics).
        """
        if not isinstance(data, dict):
            raise DataError(f"expected a dict; got {type(data).__name__}")
        if data.get("format") != _FORMAT or data.get("version") != _VERSION:
            raise DataError(f"expected format {_FORMAT!r} version {_VERSION}")
        keys = ("strict", "categorical", "columns", "medians", "means", "stds", "categories")
        absent = [k for k in (*keys, "modes") if k not in data]
        if absent:
            raise DataError(f"serialised preprocessor lacks keys {absent}")
        columns = data["columns"]
        if (
            not isinstance(columns, list)
            or not columns
            or not all(isinstance(c, str) for c in columns)
            or len(set(columns)) != len(columns)
        ):
            raise DataError("'columns' must be a non-empty list of distinct strings")
        tables = {k: data[k] for k in ("medians", "means", "stds", "categories", "modes")}
        for key, table in tables.items():
            if not isinstance(table, dict):
                raise DataError(f"'{key}' must be a dict keyed by column")

        numeric: dict[str, _NumericStats] = {}
        categorical: dict[str, _CategoricalStats] = {}
        for column in columns:
            if column in tables["categories"]:
                categorical[column] = _categorical_from_json(column, tables)
            else:
                numeric[column] = _numeric_from_json(column, tables)
        expected_numeric, expected_categorical = set(numeric), set(categorical)
        for key in ("medians", "means", "stds"):
            if set(tables[key]) != expected_numeric:
                raise DataError(f"'{key}' does not match the numeric columns")
        for key in ("categories", "modes"):
            if set(tables[key]) != expected_categorical:
                raise DataError(f"'{key}' does not match the categorical columns")

        try:
            preprocessor = cls(categorical=data["categorical"], strict=data["strict"])
        except (ParameterError, TypeError) as exc:
            raise DataError(f"invalid constructor arguments in serialised data: {exc}") from exc
        preprocessor._state = _FittedState(tuple(columns), numeric, categorical)
        return preprocessor

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`to_dict` to ``path`` as JSON.

        Parameters
        ----------
        path : str or os.PathLike
            Destination file; overwritten if it exists.

        Raises
        ------
        NotFittedError
            If called before :meth:`fit`.
        """
        text = json.dumps(self.to_dict(), indent=2, allow_nan=False)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PartyPreprocessor:
        """Read a preprocessor written by :meth:`save`.

        Parameters
        ----------
        path : str or os.PathLike
            File written by :meth:`save`.

        Returns
        -------
        PartyPreprocessor
            The fitted preprocessor.

        Raises
        ------
        DataError
            If the file is not valid JSON or not a serialised preprocessor.
        OSError
            If the file cannot be read.
        """
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"preprocessor file is not valid JSON (line {exc.lineno})") from exc
        return cls.from_dict(data)


def _finite_float(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(f"{what} must be a number; got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise DataError(f"{what} must be finite")
    return number


def _numeric_from_json(column: str, tables: dict[str, Any]) -> _NumericStats:
    for key in ("medians", "means", "stds"):
        if column not in tables[key]:
            raise DataError(f"column '{column}' has no entry in '{key}'")
    std = _finite_float(tables["stds"][column], f"stds['{column}']")
    if std <= 0:
        raise DataError(f"stds['{column}'] must be positive")
    return _NumericStats(
        median=_finite_float(tables["medians"][column], f"medians['{column}']"),
        mean=_finite_float(tables["means"][column], f"means['{column}']"),
        std=std,
    )


def _categorical_from_json(column: str, tables: dict[str, Any]) -> _CategoricalStats:
    categories = tables["categories"][column]
    if not isinstance(categories, list) or not categories:
        raise DataError(f"categories['{column}'] must be a non-empty list")
    for value in categories:
        if not isinstance(value, (str, int, float, bool)):
            raise DataError(f"categories['{column}'] holds a {type(value).__name__}")
    if len(set(categories)) != len(categories):
        raise DataError(f"categories['{column}'] holds duplicates")
    if column not in tables["modes"] or tables["modes"][column] not in categories:
        raise DataError(f"modes['{column}'] must be one of the column's categories")
    return _CategoricalStats(categories=tuple(categories), mode=tables["modes"][column])
