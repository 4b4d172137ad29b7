"""The one-call recipe: align several parties' data frames on a shared ID column."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from protocols.errors import DataError, ParameterError
from psi._driver import run_multi_party

__all__ = ["align"]


def _party_ids(name: str, frame: pd.DataFrame, id_column: str) -> list[str]:
    if not isinstance(frame, pd.DataFrame):
        raise ParameterError(f"party {name!r}: expected a pandas DataFrame")
    matches = int((frame.columns == id_column).sum())
    if matches == 0:
        raise DataError(f"party {name!r}: no ID column {id_column!r}")
    if matches > 1:
        raise DataError(f"party {name!r}: {matches} columns are named {id_column!r}")
    column = frame[id_column]
    n_null = int(column.isna().sum())
    if n_null:
        raise DataError(f"party {name!r}: {n_null} null ID(s) in column {id_column!r}")
    ids = [str(value) for value in column]
    n_duplicates = len(ids) - len(set(ids))
    if n_duplicates:
        raise DataError(
            f"party {name!r}: {n_duplicates} duplicate ID(s) in column {id_column!r} "
            "(after conversion with str())"
        )
    return ids


def align(
    frames: dict[str, pd.DataFrame],
    id_column: str = "id",
    *,
    leader: str | None = None,
) -> dict[str, pd.DataFrame]:
    """Keep each party's rows whose ID all parties share, in one common order.

    Runs ECDH-PSI (see :class:`PsiInitiator`) between the parties in this process, over an
    in-memory transport that encodes and decodes every message.

    Parameters
    ----------
    frames : dict of str to pandas.DataFrame
        Each party's data by party name (at least two).
    id_column : str, default "id"
        Name of the ID column in every frame. IDs are compared as ``str(value)``, so convert
        them consistently first: the integer ``1`` matches ``"1"`` but not the float ``1.0``.
    leader : str, optional
        The party that runs PSI with every other party (e.g. the label holder).
        Default: the first party in ``frames``.

    Returns
    -------
    dict of str to pandas.DataFrame
        Each party's rows of the intersection, all in the same order, with a fresh
        ``RangeIndex``; the ID column is kept so that alignment can be checked. Row ``k`` of
        every frame has the same ID. Rows are sorted by ID (as strings): every party knows the
        IDs of its own intersection rows, so each sorts locally, and the result does not depend
        on the session's random scalars (train/test splits after ``align`` are reproducible).
        The input frames are not modified.

    Raises
    ------
    ParameterError
        Fewer than two frames, a value that is not a DataFrame, or an unknown ``leader``.
    DataError
        A frame without the ID column (or with several), null IDs, duplicate IDs within a
        party, or an empty intersection. Messages name the party and column, never an ID.

    Security
    --------
    Each party learns the number of distinct IDs of the parties it runs PSI with and the
    intersection. With more than two parties the leader learns each pairwise intersection with
    itself and every other party learns its pairwise intersection with the leader (a later
    version removes this leak). No ID or hash of an ID is exchanged. Here all parties run in one
    process, so this function is for alignment and testing; across organisations, run the
    roles (:class:`PsiInitiator`, :class:`PsiResponder`) at each party.

    Examples
    --------
    >>> import pandas as pd
    >>> from psi import align
    >>> bank = pd.DataFrame({"id": ["u1", "u2", "u3"], "income": [10, 20, 30]})
    >>> shop = pd.DataFrame({"id": ["u3", "u1", "u9"], "spend": [5, 6, 7]})
    >>> out = align({"bank": bank, "shop": shop})
    >>> sorted(out["bank"]["id"]) == ["u1", "u3"]
    True
    >>> list(out["bank"]["id"]) == list(out["shop"]["id"])
    True
    """
    if not isinstance(frames, Mapping):
        raise ParameterError("frames must be a dict of party name to DataFrame")
    if len(frames) < 2:
        raise ParameterError(f"align needs at least 2 frames, got {len(frames)}")
    if leader is not None and leader not in frames:
        raise ParameterError(f"leader {leader!r} is not one of the parties")
    ids = {name: _party_ids(name, frame, id_column) for name, frame in frames.items()}
    result = run_multi_party(ids, leader=leader)
    if not result.rows[next(iter(frames))]:
        raise DataError(f"the {len(frames)} parties have no ID in common")
    aligned = {}
    for name, frame in frames.items():
        rows = sorted(result.rows[name], key=ids[name].__getitem__)
        aligned[name] = frame.iloc[rows].reset_index(drop=True)
    return aligned
