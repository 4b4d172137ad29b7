"""``vfl psi`` as a user runs it: CSV files in, each party's aligned rows out."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from vfl.cli import main


def _write(tmp_path, name, ids, **columns):
    path = tmp_path / f"{name}.csv"
    pd.DataFrame({"id": ids, **columns}).to_csv(path, index=False)
    return path


def _rows(out, name):
    return pd.read_csv(out / f"{name}.rows.csv")["row"].tolist()


def test_two_parties_both_learn_aligned_rows(tmp_path):
    a_ids = [f"C{i:04d}" for i in range(0, 300, 2)]
    b_ids = [f"C{i:04d}" for i in range(0, 300, 3)][::-1]
    a = _write(tmp_path, "bank", a_ids, x=range(len(a_ids)))
    b = _write(tmp_path, "shop", b_ids, y=range(len(b_ids)))
    out = tmp_path / "out"
    assert main(["psi", "--ids", str(a), "--ids", str(b), "--out", str(out)]) == 0
    common = sorted(set(a_ids) & set(b_ids))
    assert [a_ids[r] for r in _rows(out, "bank")] == common
    assert [b_ids[r] for r in _rows(out, "shop")] == common
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_intersection"] == len(common)
    assert summary["parties"]["bank"]["n_ids"] == len(a_ids)


def test_three_parties_and_normalisation(tmp_path):
    a = _write(tmp_path, "a", [" Ann@Mail.com", "bob@x.org", "eve@y.net"])
    b = _write(tmp_path, "b", ["ann@mail.com", "BOB@X.ORG", "zed@q.io"])
    c = _write(tmp_path, "c", ["bob@x.org", "ann@mail.com "])
    out = tmp_path / "out"
    args = [
        "psi",
        "--ids",
        str(a),
        "--ids",
        str(b),
        "--ids",
        str(c),
        "--normalise",
        "nfkc,email,nfkc",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    assert _rows(out, "a") == [0, 1] and _rows(out, "b") == [0, 1] and _rows(out, "c") == [1, 0]


def test_receiver_and_cardinality_modes(tmp_path):
    a = _write(tmp_path, "a", ["1", "2", "3", "4"])
    b = _write(tmp_path, "b", ["4", "2", "9"])
    out = tmp_path / "receiver"
    assert (
        main(["psi", "--ids", str(a), "--ids", str(b), "--mode", "receiver", "--out", str(out)])
        == 0
    )
    assert _rows(out, "a") == [1, 3] and not (out / "b.rows.csv").exists()
    out = tmp_path / "cardinality"
    assert (
        main(["psi", "--ids", str(a), "--ids", str(b), "--mode", "cardinality", "--out", str(out)])
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == ["summary.json"]
    assert json.loads((out / "summary.json").read_text())["n_intersection"] == 2


@pytest.mark.parametrize(
    ("b_ids", "extra", "message"),
    [
        (["1", "1", "2"], [], "duplicate"),
        (["7", "8"], [], "no ID in common"),
        (["1", "2"], ["--column", "nope"], "nope"),
        (["1", "2"], ["--normalise", "shout"], "unknown"),
    ],
)
def test_errors_exit_2_and_write_nothing(tmp_path, capsys, b_ids, extra, message):
    a = _write(tmp_path, "a", ["1", "2", "3"])
    b = _write(tmp_path, "b", b_ids)
    out = tmp_path / "out"
    extra = [str(a) if e == "EXTRA" else e for e in extra]
    assert main(["psi", "--ids", str(a), "--ids", str(b), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert not out.exists()


@pytest.mark.parametrize("mode", ["receiver", "cardinality"])
def test_three_parties_restricted_modes(tmp_path, mode):
    a = _write(tmp_path, "a", ["1", "2", "3", "4"])
    b = _write(tmp_path, "b", ["4", "2", "9"])
    c = _write(tmp_path, "c", ["2", "4", "5"])
    out = tmp_path / mode
    assert (
        main(
            [
                "psi",
                "--ids",
                str(a),
                "--ids",
                str(b),
                "--ids",
                str(c),
                "--mode",
                mode,
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert json.loads((out / "summary.json").read_text())["n_intersection"] == 2
    written = sorted(p.name for p in out.iterdir())
    if mode == "receiver":
        assert written == ["a.rows.csv", "summary.json"] and _rows(out, "a") == [1, 3]
    else:
        assert written == ["summary.json"]
