"""``vfl psi``: intersect the ID columns of two or more CSV files and write each party's rows.

Outputs (in ``--out``, written only after the intersection succeeded, each file atomically):

* ``<party>.rows.csv``: column ``row``, the party's 0-based data-row indices of the common IDs,
  in one order shared by every party (sorted by the normalised ID); for every party in mode
  ``both``, for the first file's party only in mode ``receiver``, for nobody in ``cardinality``
  (two files: two-party ECDH-PSI; three or more: the N-party protocol, first file as leader);
* ``summary.json``: parties, their row and distinct-ID counts, the mode, the normalisation and
  ``n_intersection``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

import psi
from protocols.errors import DataError, ParameterError
from psi._align import align_rows, prepare_ids
from psi.normalise import parse_normaliser

__all__ = ["run_psi_command"]


def _party_names(paths: list[str]) -> list[str]:
    names: list[str] = []
    for path in paths:
        stem = Path(path).stem or "party"
        name, k = stem, 2
        while name in names:
            name, k = f"{stem}-{k}", k + 1
        names.append(name)
    return names


def _read_ids(path: str, column: str) -> pd.Series:
    try:
        frame = pd.read_csv(path, usecols=[column], dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise DataError(f"file {path} not found") from None
    except ValueError as exc:  # pandas: usecols not found, bad CSV
        raise DataError(f"{path}: cannot read column {column!r} ({exc})") from None
    column_values = frame[column]
    empty = column_values.str.len() == 0
    if empty.any():
        raise DataError(f"{path}: {int(empty.sum())} empty ID(s) in column {column!r}")
    return column_values


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def run_psi_command(args: argparse.Namespace) -> dict[str, Any]:
    if len(args.ids) < 2:
        raise ParameterError("give at least two --ids files")
    normaliser = parse_normaliser(args.normalise)
    names = _party_names(args.ids)
    columns = {name: _read_ids(path, args.column) for name, path in zip(names, args.ids)}
    ids = {
        name: prepare_ids(name, column, args.column, normaliser) for name, column in columns.items()
    }
    bar = None
    progress = None
    if args.progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc="psi", unit="pt")

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

    try:
        if args.mode == "both":
            rows: dict[str, list[int] | None] = dict(
                align_rows(ids, n_jobs=args.n_jobs, progress=progress)
            )
            n_common = len(next(iter(rows.values())) or [])
        elif len(names) == 2:
            a, b = names
            result = psi.run_two_party(
                ids[a],
                ids[b],
                names=(a, b),
                reveal=args.mode,
                n_jobs=args.n_jobs,
                progress=progress,
            )
            n_common = int(result.a.cardinality or 0)
            rows = {a: None, b: None}
            if args.mode == "receiver" and result.a.rows is not None:
                rows[a] = sorted((int(r) for r in result.a.rows), key=ids[a].__getitem__)
        else:
            multi = psi.run_n_party(ids, leader=names[0], reveal=args.mode)
            n_common = int(multi.cardinality)
            rows = {name: None for name in names}
            for name, party_rows in multi.rows.items():
                rows[name] = sorted(party_rows, key=ids[name].__getitem__)
    finally:
        if bar is not None:
            bar.close()
    summary = {
        "mode": args.mode,
        "normalise": normaliser.describe(),
        "n_intersection": n_common,
        "parties": {
            name: {
                "file": str(path),
                "n_rows": len(columns[name]),
                "n_ids": len(ids[name]),
                "rows_file": f"{name}.rows.csv" if rows[name] is not None else None,
            }
            for name, path in zip(names, args.ids)
        },
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, written in rows.items():
        if written is not None:
            _write(out / f"{name}.rows.csv", "row\n" + "".join(f"{r}\n" for r in written))
    _write(out / "summary.json", json.dumps(summary, indent=2))
    print(f"{n_common} IDs in common ({args.mode}); written to {out}")
    return summary
