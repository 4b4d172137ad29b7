"""Command line: ``vfl demo`` and ``vfl train``.

Errors from the project's exception tree are printed as one line on stderr (exit code 2);
the report file is written only when everything succeeded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from protocols.errors import DataError, ParameterError, VFLError

__all__ = ["main"]


def _model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend",
        default="paillier",
        choices=["paillier", "ckks"],
        help="homomorphic encryption scheme (default: paillier)",
    )
    parser.add_argument(
        "--key-bits",
        type=int,
        default=2048,
        help="Paillier key size in bits (default: 2048; CKKS picks its own ring)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed for data, split and mini-batches (default: 0)"
    )
    parser.add_argument("--max-iter", type=int, default=8, help="epochs (default: 8)")
    parser.add_argument("--batch-size", type=int, default=256, help="mini-batch size")
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--l2", type=float, default=1e-3, help="ridge penalty")
    parser.add_argument("--optimizer", default="adam", choices=["adam", "sgd"])
    parser.add_argument(
        "--test-size",
        type=float,
        default=0.3,
        help="share of aligned rows held out for evaluation (default: 0.3)",
    )
    parser.add_argument("--report", type=Path, help="write the report as JSON to this file")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vfl",
        description="Vertical federated logistic regression with homomorphic encryption.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="synthetic bank + retailer: PSI, encrypted training, evaluation"
    )
    demo.add_argument(
        "--rows", type=int, default=3000, help="customers generated per federation (default: 3000)"
    )
    _model_args(demo)
    psi_cmd = commands.add_parser(
        "psi", help="private set intersection of ID files; writes each party's aligned rows"
    )
    psi_cmd.add_argument(
        "--ids",
        action="append",
        required=True,
        metavar="CSV",
        help="a party's CSV file (repeat; the party is named after the file)",
    )
    psi_cmd.add_argument("--column", default="id", help="ID column (default: id)")
    psi_cmd.add_argument(
        "--mode",
        default="both",
        choices=["both", "receiver", "cardinality"],
        help="who learns what: both parties their rows (default), only the "
        "first file's party, or only the intersection size",
    )
    psi_cmd.add_argument(
        "--normalise",
        default="",
        metavar="STEPS",
        help="comma list applied to every ID before hashing, e.g. "
        "nfkc,casefold,strip or nfkc,email,nfkc (see psi.normalise)",
    )
    psi_cmd.add_argument(
        "--n-jobs", type=int, default=None, help="worker processes (default: all cores)"
    )
    psi_cmd.add_argument("--out", required=True, type=Path, help="output folder")
    psi_cmd.add_argument("--progress", action="store_true", help="show a progress bar")
    train = commands.add_parser("train", help="PSI + encrypted training on your CSV files")
    train.add_argument(
        "--party",
        action="append",
        required=True,
        metavar="NAME=PATH",
        help="a party's CSV file (repeat for every party)",
    )
    train.add_argument("--label-party", required=True, help="the party holding the labels")
    train.add_argument("--label-column", required=True, help="binary 0/1 label column")
    train.add_argument("--id-column", default="id", help="customer ID column (default: id)")
    _model_args(train)
    return parser


def _keys(args: argparse.Namespace) -> str:
    return f"{args.key_bits}-bit paillier" if args.backend == "paillier" else "ckks"


def _read_parties(specs: Sequence[str], id_column: str) -> dict[str, pd.DataFrame]:
    frames: dict[str, pd.DataFrame] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ParameterError(f"--party expects NAME=PATH, got {spec!r}")
        if name in frames:
            raise ParameterError(f"party {name!r} is given twice")
        try:
            # IDs stay strings: leading zeros and long numbers must survive.
            frames[name] = pd.read_csv(path, dtype={id_column: str})
        except FileNotFoundError:
            raise DataError(f"party {name!r}: file {path} not found") from None
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            raise DataError(f"party {name!r}: cannot read {path} ({exc})") from None
    if len(frames) < 2:
        raise ParameterError("give at least two --party NAME=PATH")
    return frames


def _write_report(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, path)


def _run(args: argparse.Namespace) -> dict[str, Any]:
    from vfl.pipeline import format_report, run_pipeline

    params = dict(
        backend=args.backend,
        key_bits=args.key_bits,
        max_iter=args.max_iter,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        l2=args.l2,
        optimizer=args.optimizer,
        test_size=args.test_size,
        seed=args.seed,
        verbose=not args.quiet,
        n_jobs=None,
    )
    started = time.perf_counter()
    if args.command == "demo":
        from vfl.datasets import make_bank_retailer

        data = make_bank_retailer(args.rows, seed=args.seed)
        frames = {"bank": data.bank, "retailer": data.retailer}
        print(
            f"synthetic federation: bank {len(data.bank)} rows, retailer "
            f"{len(data.retailer)} rows; {_keys(args)} keys"
        )
        report = run_pipeline(
            frames,
            label_party="bank",
            label_column=data.label_column,
            id_column=data.id_column,
            **params,
        )
    else:
        frames = _read_parties(args.party, args.id_column)
        report = run_pipeline(
            frames,
            label_party=args.label_party,
            label_column=args.label_column,
            id_column=args.id_column,
            **params,
        )
    report["total_seconds"] = time.perf_counter() - started
    print(format_report(report))
    print(f"total {report['total_seconds']:.1f} s")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    try:
        if args.command == "psi":
            from vfl.psi_cli import run_psi_command

            run_psi_command(args)
            return 0
        report = _run(args)
        if args.report is not None:
            _write_report(args.report, report)
            print(f"report written to {args.report}")
    except VFLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
