"""Tests for vfl.preprocessing.PartyPreprocessor.

The reference for the numbers is scikit-learn (SimpleImputer + StandardScaler for numeric
columns, SimpleImputer + OneHotEncoder for categorical ones) or plain numpy, fitted on the same
training rows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.impute import SimpleImputer
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from protocols.errors import DataError, NotFittedError, ParameterError
from vfl.preprocessing import PartyPreprocessor


def _train_test() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(0)
    n = 200
    income = rng.lognormal(10, 0.5, n)
    income[rng.random(n) < 0.1] = np.nan
    train = pd.DataFrame(
        {
            "income": income,
            "age": rng.integers(18, 80, n),
            "employment": pd.Series(
                rng.choice(["salaried", "self_employed", "retired"], n), dtype=object
            ),
            "region": rng.integers(1, 4, n),  # integer codes, declared categorical
            "flag": rng.random(n) < 0.3,
        }
    )
    train.loc[[3, 17, 40], "employment"] = None
    test = pd.DataFrame(
        {
            "income": [np.nan, 1e6, 2e4, 5e4],
            "age": [30, 99, 18, 45],
            "employment": ["salaried", "student", None, "retired"],  # "student" unseen
            "region": [1, 2, 9, 3],  # 9 unseen
            "flag": [True, False, True, False],
        }
    )
    return train, test


def _sklearn_reference(train: pd.DataFrame, test: pd.DataFrame) -> np.ndarray:
    """The same preprocessing, column by column, with scikit-learn."""
    blocks = []
    for column in train.columns:
        if column in ("income", "age"):
            imputer = SimpleImputer(strategy="median").fit(train[[column]])
            scaler = StandardScaler().fit(imputer.transform(train[[column]]))
            blocks.append(scaler.transform(imputer.transform(test[[column]])))
        else:
            # most_frequent breaks ties toward the smallest value, as PartyPreprocessor does.
            # Missing values are spelled np.nan for scikit-learn, whatever pandas stored.
            tr = train[[column]].astype(object)
            tr = tr.where(tr.notna(), np.nan)
            te = test[[column]].astype(object)
            te = te.where(te.notna(), np.nan)
            imputer = SimpleImputer(strategy="most_frequent").fit(tr)
            encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
            encoder.fit(imputer.transform(tr))
            blocks.append(encoder.transform(imputer.transform(te)))
    return np.hstack(blocks)


def test_matches_sklearn_reference_on_unseen_rows() -> None:
    train, test = _train_test()
    prep = PartyPreprocessor(categorical=["region"]).fit(train)
    got = prep.transform(test)
    assert got.dtype == np.float64 and got.shape == (4, prep.n_features_out_)
    np.testing.assert_allclose(got, _sklearn_reference(train, test), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        prep.transform(train), _sklearn_reference(train, train), rtol=1e-12, atol=1e-12
    )
    assert prep.feature_names_ == [
        "income",
        "age",
        "employment=retired",
        "employment=salaried",
        "employment=self_employed",
        "region=1",
        "region=2",
        "region=3",
        "flag=False",
        "flag=True",
    ]
    assert prep.numeric_columns_ == ["income", "age"]
    assert prep.categorical_columns_ == ["employment", "region", "flag"]
    assert prep.feature_names_in_ == list(train.columns)
    # Unseen categories encode as all zeros.
    assert got[1, 2:5].tolist() == [0.0, 0.0, 0.0]
    assert got[2, 5:8].tolist() == [0.0, 0.0, 0.0]


def test_statistics_come_from_training_rows_only() -> None:
    prep = PartyPreprocessor().fit(pd.DataFrame({"x": [0.0, 2.0, np.nan], "c": ["a", "b", "b"]}))
    # Training: median 1, imputed [0, 2, 1], mean 1, std sqrt(2/3); mode "b".
    out = prep.transform(pd.DataFrame({"x": [4.0, np.nan], "c": [None, "a"]}))
    std = np.sqrt(2.0 / 3.0)
    np.testing.assert_allclose(out, [[3.0 / std, 0.0, 1.0], [0.0, 1.0, 0.0]])
    # Transforming different data does not refit.
    assert prep.to_dict()["means"] == {"x": 1.0}


@settings(max_examples=60, deadline=None)
@given(
    st.integers(2, 40).flatmap(
        lambda n: st.lists(
            st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False)), min_size=n, max_size=n
        )
    ),
    st.lists(st.sampled_from(["a", "b", "c", None]), min_size=40, max_size=40),
)
def test_matches_numpy_reference(numbers: list[float | None], labels: list[str | None]) -> None:
    n = len(numbers)
    labels = labels[:n]
    if all(v is None for v in numbers):
        numbers[0] = 1.0
    if all(v is None for v in labels):
        labels[0] = "a"
    frame = pd.DataFrame(
        {"x": pd.Series(numbers, dtype=float), "c": pd.Series(labels, dtype=object)}
    )
    out = PartyPreprocessor().fit_transform(frame)

    x = frame["x"].to_numpy(dtype=float)
    x = np.where(np.isnan(x), np.nanmedian(x), x)
    std = x.std() if np.ptp(x) > 0 else 1.0
    std = std if std > 0 else 1.0  # e.g. subnormal spreads whose variance underflows to 0
    counts = frame["c"].value_counts()
    categories = sorted(counts.index)
    mode = min(counts[counts == counts.max()].index)
    c = frame["c"].fillna(mode)
    expected = np.column_stack(
        [(x - x.mean()) / std] + [(c == k).to_numpy(dtype=float) for k in categories]
    )
    np.testing.assert_allclose(out, expected, rtol=1e-9, atol=1e-9)


def test_constant_column_becomes_zeros() -> None:
    out = PartyPreprocessor().fit_transform(pd.DataFrame({"x": [0.1] * 5, "y": [1, 2, 3, 4, 5]}))
    assert np.all(out[:, 0] == 0.0)


def test_column_kinds_by_dtype() -> None:
    frame = pd.DataFrame(
        {
            "obj_numbers": pd.Series([1, 2, 2], dtype=object),  # object -> categorical
            "text": pd.Series(["x", "y", "x"], dtype="string"),
            "cat": pd.Series(["p", "q", "p"], dtype="category"),
            "flag": [True, False, True],
            "nullable_int": pd.Series([1, pd.NA, 3], dtype="Int64"),
            "f32": np.array([1.0, 2.0, 3.0], dtype=np.float32),
        }
    )
    prep = PartyPreprocessor().fit(frame)
    assert prep.numeric_columns_ == ["nullable_int", "f32"]
    assert prep.feature_names_[:2] == ["obj_numbers=1", "obj_numbers=2"]
    out = prep.transform(frame)
    assert out.shape == (3, prep.n_features_out_) == (3, 10)
    assert np.isfinite(out).all()


def test_transform_selects_columns_by_name() -> None:
    train, test = _train_test()
    prep = PartyPreprocessor(categorical=["region"]).fit(train)
    reordered = test[list(reversed(test.columns))].assign(extra=1.0)
    np.testing.assert_array_equal(prep.transform(reordered), prep.transform(test))


def test_numeric_strings_are_accepted_at_transform() -> None:
    prep = PartyPreprocessor().fit(pd.DataFrame({"x": [1.0, 3.0]}))
    as_text = pd.DataFrame({"x": pd.Series(["1.0", None], dtype=object)})
    np.testing.assert_allclose(prep.transform(as_text), [[-1.0], [0.0]])


def test_empty_transform() -> None:
    train, test = _train_test()
    prep = PartyPreprocessor(categorical=["region"]).fit(train)
    assert prep.transform(test.iloc[:0]).shape == (0, prep.n_features_out_)


def test_input_frames_are_not_mutated() -> None:
    train, test = _train_test()
    train_copy, test_copy = train.copy(deep=True), test.copy(deep=True)
    prep = PartyPreprocessor(categorical=["region"])
    prep.fit_transform(train)
    prep.transform(test)
    pd.testing.assert_frame_equal(train, train_copy)
    pd.testing.assert_frame_equal(test, test_copy)


def test_round_trip_dict_json_and_file(tmp_path: Path) -> None:
    train, test = _train_test()
    prep = PartyPreprocessor(categorical=["region"], strict=False).fit(train)
    expected = prep.transform(test)

    via_dict = PartyPreprocessor.from_dict(prep.to_dict())
    via_json = PartyPreprocessor.from_dict(json.loads(json.dumps(prep.to_dict())))
    path = tmp_path / "party.json"
    prep.save(path)
    via_file = PartyPreprocessor.load(path)
    via_str_path = PartyPreprocessor.load(str(path))

    for restored in (via_dict, via_json, via_file, via_str_path):
        np.testing.assert_array_equal(restored.transform(test), expected)
        assert restored.feature_names_ == prep.feature_names_
        assert restored.categorical == ["region"] and restored.strict is False
        assert restored.to_dict() == prep.to_dict()


def test_to_dict_contents() -> None:
    prep = PartyPreprocessor(strict=True).fit(
        pd.DataFrame({"x": [1.0, 2.0, 6.0], "c": ["b", "a", "b"]})
    )
    d = prep.to_dict()
    assert d["columns"] == ["x", "c"]
    assert d["medians"] == {"x": 2.0} and d["means"] == {"x": 3.0}
    assert d["stds"]["x"] == pytest.approx(np.std([1.0, 2.0, 6.0]))
    assert d["categories"] == {"c": ["a", "b"]} and d["modes"] == {"c": "b"}
    assert d["strict"] is True


# ----------------------------------------------------------------------------- errors


def test_strict_rejects_missing_at_fit_and_transform() -> None:
    with pytest.raises(DataError, match="'x'"):
        PartyPreprocessor(strict=True).fit(pd.DataFrame({"x": [1.0, np.nan]}))
    with pytest.raises(DataError, match="'c'"):
        PartyPreprocessor(strict=True).fit(pd.DataFrame({"c": ["a", None]}))
    prep = PartyPreprocessor(strict=True).fit(pd.DataFrame({"x": [1.0, 2.0], "c": ["a", "b"]}))
    with pytest.raises(DataError, match="'c'"):
        prep.transform(pd.DataFrame({"x": [1.0, 2.0], "c": ["a", None]}))


@pytest.mark.parametrize(
    "frame",
    [
        pd.DataFrame(index=range(3)),  # zero feature columns
        pd.DataFrame({"x": pd.Series([], dtype=float)}),  # zero rows
        pd.DataFrame({"x": [1.0, 2.0], "gone": [np.nan, np.nan]}),  # entirely missing
        pd.DataFrame({"x": [1.0, np.inf]}),  # infinite
        pd.DataFrame({"when": pd.to_datetime(["2024-01-01", "2024-01-02"])}),  # dtype
        pd.DataFrame({"c": pd.Series([(1, 2), (3, 4)], dtype=object)}),  # not a JSON scalar
        pd.DataFrame([[1.0, 2.0]], columns=["x", "x"]),  # duplicate names
        pd.DataFrame({0: [1.0, 2.0]}),  # non-string name
    ],
)
def test_fit_rejects_bad_frames(frame: pd.DataFrame) -> None:
    with pytest.raises(DataError):
        PartyPreprocessor().fit(frame)


def test_fit_error_names_the_column() -> None:
    with pytest.raises(DataError, match="'gone'"):
        PartyPreprocessor().fit(pd.DataFrame({"x": [1.0, 2.0], "gone": [None, None]}))


def test_fit_rejects_non_frames_and_absent_declared_columns() -> None:
    with pytest.raises(DataError):
        PartyPreprocessor().fit(np.zeros((3, 2)))  # type: ignore[arg-type]
    with pytest.raises(DataError, match="region"):
        PartyPreprocessor(categorical=["region"]).fit(pd.DataFrame({"x": [1.0]}))


def test_transform_rejects_non_numeric_strings_without_leaking_them() -> None:
    prep = PartyPreprocessor().fit(pd.DataFrame({"income": [1.0, 2.0]}))
    bad = pd.DataFrame({"income": pd.Series(["1.5", "SECRET-VALUE"], dtype=object)})
    with pytest.raises(DataError, match="'income'") as info:
        prep.transform(bad)
    assert "SECRET" not in str(info.value)


def test_transform_rejects_infinite_values() -> None:
    prep = PartyPreprocessor().fit(pd.DataFrame({"x": [1.0, 2.0]}))
    with pytest.raises(DataError, match="'x'"):
        prep.transform(pd.DataFrame({"x": [np.inf]}))


def test_transform_names_missing_columns() -> None:
    train, test = _train_test()
    prep = PartyPreprocessor(categorical=["region"]).fit(train)
    with pytest.raises(DataError, match="income.*region|region.*income"):
        prep.transform(test.drop(columns=["income", "region"]))


def test_transform_rejects_unhashable_categories() -> None:
    prep = PartyPreprocessor().fit(pd.DataFrame({"c": ["a", "b"]}))
    with pytest.raises(DataError, match="'c'"):
        prep.transform(pd.DataFrame({"c": pd.Series([["a"], "b"], dtype=object)}))


@pytest.mark.parametrize(
    "use",
    [
        lambda p: p.transform(pd.DataFrame({"x": [1.0]})),
        lambda p: p.feature_names_,
        lambda p: p.n_features_out_,
        lambda p: p.feature_names_in_,
        lambda p: p.to_dict(),
        lambda p: p.save("unused.json"),
    ],
)
def test_use_before_fit_raises_not_fitted(use: Any) -> None:
    with pytest.raises(NotFittedError):
        use(PartyPreprocessor())


@pytest.mark.parametrize(
    "kwargs",
    [{"categorical": "employment"}, {"categorical": [1]}, {"strict": 1}],
)
def test_constructor_rejects_bad_parameters(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ParameterError):
        PartyPreprocessor(**kwargs)


def _valid_dict() -> dict[str, Any]:
    frame = pd.DataFrame({"x": [1.0, 2.0], "c": ["a", "b"]})
    return PartyPreprocessor().fit(frame).to_dict()


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda d: d.update(format="something-else"),
        lambda d: d.update(version=99),
        lambda d: d.pop("medians"),
        lambda d: d.update(columns=[]),
        lambda d: d.update(columns=["x", "x"]),
        lambda d: d.update(columns=["x", "c", "y"]),
        lambda d: d["stds"].update(x=0.0),
        lambda d: d["means"].update(x="1.0"),
        lambda d: d["medians"].update(x=float("nan")),
        lambda d: d["modes"].update(c="z"),
        lambda d: d["categories"].update(c=[]),
        lambda d: d["categories"].update(c=["a", "a"]),
        lambda d: d["categories"].update(c=[["a"], "b"]),
        lambda d: d["means"].update(y=1.0),
        lambda d: d.update(strict="yes"),
        lambda d: d.update(categorical="c"),
    ],
)
def test_from_dict_rejects_corrupt_data(corrupt: Any) -> None:
    d = _valid_dict()
    corrupt(d)
    with pytest.raises(DataError):
        PartyPreprocessor.from_dict(d)


def test_from_dict_rejects_non_dicts() -> None:
    with pytest.raises(DataError):
        PartyPreprocessor.from_dict([1, 2])  # type: ignore[arg-type]


def test_load_rejects_invalid_json(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(DataError):
        PartyPreprocessor.load(path)
