"""The ``vfl`` command as a user runs it: real 2048-bit keys, CSV files, a JSON report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from vfl.cli import main
from vfl.datasets import make_bank_retailer

REPO = Path(__file__).resolve().parents[1]


def _command() -> list[str]:
    script = Path(sys.executable).with_name("vfl")
    return [str(script)] if script.exists() else [sys.executable, "-m", "vfl.cli"]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if not Path(sys.executable).with_name("vfl").exists():  # not installed: use the checkout
        env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        _command() + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.fixture
def csv_files(tmp_path):
    data = make_bank_retailer(700, seed=4)
    bank, retailer = tmp_path / "bank.csv", tmp_path / "retailer.csv"
    data.bank.to_csv(bank, index=False)
    data.retailer.to_csv(retailer, index=False)
    return data, bank, retailer


def test_train_writes_report(csv_files, tmp_path):
    data, bank, retailer = csv_files
    report_path = tmp_path / "out" / "report.json"
    result = _run(
        [
            "train",
            "--party",
            f"bank={bank}",
            "--party",
            f"retailer={retailer}",
            "--label-party",
            "bank",
            "--label-column",
            "default",
            "--max-iter",
            "2",
            "--batch-size",
            "64",
            "--quiet",
            "--report",
            str(report_path),
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(report_path.read_text())
    expected = len(set(data.bank["id"]) & set(data.retailer["id"]))
    assert report["n_aligned"] == expected
    assert report["backend"] == "paillier" and report["key_bits"] == 2048
    assert report["n_iter"] == 2 and report["seconds_per_epoch"] > 0
    for block in (report, report["label_party_only"], report["centralized"]):
        assert 0.5 < block["auc"] <= 1 and 0 <= block["ks"] <= 1 and 0 < block["accuracy"] <= 1
    assert "centralized (plaintext)" in result.stdout


def test_demo_runs(tmp_path):
    result = _run(["demo", "--rows", "600", "--max-iter", "1", "--quiet"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "federated (paillier, 2048-bit)" in result.stdout
    assert "bank only (plaintext)" in result.stdout


def _train_args(bank, retailer, report, *extra):
    return [
        "train",
        "--party",
        f"bank={bank}",
        "--party",
        f"retailer={retailer}",
        "--label-party",
        "bank",
        "--label-column",
        "default",
        "--quiet",
        "--report",
        str(report),
        *extra,
    ]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda b, r: (pd.concat([b, b.iloc[:3]]), r), "duplicate"),
        (lambda b, r: (b, r.assign(id=r["id"] + "-x")), "no ID in common"),
        (lambda b, r: (b.assign(default=b["default"].map({0: "no", 1: "yes"})), r), "numeric"),
        (lambda b, r: (b.assign(default=b["default"] * 3), r), "binary"),
        (lambda b, r: (b, r[["id"]]), "no feature"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(csv_files, tmp_path, capsys, edit, message):
    data, bank, retailer = csv_files
    new_bank, new_retailer = edit(data.bank, data.retailer)
    new_bank.to_csv(bank, index=False)
    new_retailer.to_csv(retailer, index=False)
    report = tmp_path / "report.json"
    assert main(_train_args(bank, retailer, report)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert not report.exists() and not list(tmp_path.glob("*.tmp"))


def test_missing_file_and_bad_spec(tmp_path, capsys):
    assert main(_train_args(tmp_path / "nope.csv", tmp_path / "x.csv", tmp_path / "r.json")) == 2
    assert "not found" in capsys.readouterr().err
    assert (
        main(
            [
                "train",
                "--party",
                "bank",
                "--party",
                "r=x",
                "--label-party",
                "bank",
                "--label-column",
                "y",
            ]
        )
        == 2
    )
    assert "NAME=PATH" in capsys.readouterr().err


def test_small_keys_refused_on_the_command_line(csv_files, tmp_path, capsys):
    _, bank, retailer = csv_files
    assert main(_train_args(bank, retailer, tmp_path / "r.json", "--key-bits", "1024")) == 2
    assert "2048" in capsys.readouterr().err
