"""The one-call recipe: align several parties' data frames on a shared ID column."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pandas as pd

from protocols.errors import DataError, ParameterError
from psi._driver import run_two_party
from psi._multiparty import run_n_party
from psi.normalise import Normaliser, parse_normaliser

__all__ = ["align", "align_rows", "prepare_ids"]


def _party_ids(
    name: str, frame: pd.DataFrame, id_column: str, normaliser: Normaliser | None
) -> list[str]:
    if not isinstance(frame, pd.DataFrame):
        raise ParameterError(f"party {name!r}: expected a pandas DataFrame")
    matches = int((frame.columns == id_column).sum())
    if matches == 0:
        raise DataError(f"party {name!r}: no ID column {id_column!r}")
    if matches > 1:
        raise DataError(f"party {name!r}: {matches} columns are named {id_column!r}")
    return prepare_ids(name, frame[id_column], id_column, normaliser)


def prepare_ids(
    name: str, column: pd.Series, id_column: str, normaliser: Normaliser | None
) -> list[str]:
    """IDs of one party as ``str``, normalised, checked for nulls and duplicates."""
    n_null = int(column.isna().sum())
    if n_null:
        raise DataError(f"party {name!r}: {n_null} null ID(s) in column {id_column!r}")
    ids = [str(value) for value in column]
    if normaliser is not None:
        try:
            ids = normaliser.apply(ids)
        except DataError as exc:
            raise DataError(f"party {name!r}, column {id_column!r}: {exc}") from None
    n_duplicates = len(ids) - len(set(ids))
    if n_duplicates:
        after = " after normalisation" if normaliser is not None else ""
        raise DataError(
            f"party {name!r}: {n_duplicates} duplicate ID(s) in column {id_column!r}"
            f"{after} (IDs are compared as str())"
        )
    return ids


def align(
    frames: dict[str, pd.DataFrame],
    id_column: str = "id",
    *,
    leader: str | None = None,
    combiner: str | None = None,
    normalise: str | Normaliser | None = None,
    n_jobs: int | None = None,
) -> dict[str, pd.DataFrame]:
    """Keep each party's rows whose ID all parties share, in one common order.

    Two parties run ECDH-PSI over X25519 (:func:`run_two_party`); three or more run the N-party
    protocol (:func:`run_n_party`), which reveals no pairwise intersection. Every message is
    encoded and decoded as it would be between hosts.

    Parameters
    ----------
    frames : dict of str to pandas.DataFrame
        Each party's data by party name (at least two).
    id_column : str, default "id"
        Name of the ID column in every frame. IDs are compared as ``str(value)``, so convert
        them consistently first: the integer ``1`` matches ``"1"`` but not the float ``1.0``.
    leader : str, optional
        The party that learns the result first (e.g. the label holder); default the first.
    combiner : str, optional
        Three or more parties: the party that compares the blinded sets (it learns the sizes of
        all sub-intersections, no identities); default the first party after the leader.
    normalise : str or Normaliser, optional
        Normalisation every party applies to its IDs before hashing, e.g.
        ``"nfkc,casefold,strip"`` or ``"nfkc,email,nfkc"`` (see :mod:`psi.normalise`).
    n_jobs : int or None, default None
        Worker processes for the two-party arithmetic (``None``: all cores; small inputs are
        computed in this process anyway).

    Returns
    -------
    dict of str to pandas.DataFrame
        Each party's rows of the intersection, all in the same order, with a fresh
        ``RangeIndex``; the ID column is kept (as in the input) so that alignment can be
        checked. Row ``k`` of every frame has the same (normalised) ID. Rows are sorted by the
        normalised ID: every party knows the IDs of its own intersection rows, so each sorts
        locally, and the result does not depend on the session's random scalars (train/test
        splits after ``align`` are reproducible). The input frames are not modified.

    Raises
    ------
    ParameterError
        Fewer than two frames, a value that is not a DataFrame, an unknown ``leader`` or
        ``combiner``, or an invalid ``normalise`` spec.
    DataError
        A frame without the ID column (or with several), null IDs, duplicate IDs within a
        party (after normalisation), an ID the normaliser rejects, or an empty intersection.
        Messages name the party and column, never an ID.

    Security
    --------
    Each party learns the number of distinct IDs of the others and the final intersection.
    With three or more parties the combiner also learns the size of every sub-intersection
    (no identities); nobody learns a pairwise intersection. No ID or hash of an ID is
    exchanged. Here all parties run in one process, so this function is for alignment and
    testing; across organisations, run the roles at each party.

    Examples
    --------
    >>> import pandas as pd
    >>> from psi import align
    >>> bank = pd.DataFrame({"id": ["u1", "u2", "u3"], "income": [10, 20, 30]})
    >>> shop = pd.DataFrame({"id": ["u3", "u1", "u9"], "spend": [5, 6, 7]})
    >>> out = align({"bank": bank, "shop": shop})
    >>> list(out["bank"]["id"]) == list(out["shop"]["id"]) == ["u1", "u3"]
    True
    """
    if not isinstance(frames, Mapping):
        raise ParameterError("frames must be a dict of party name to DataFrame")
    if len(frames) < 2:
        raise ParameterError(f"align needs at least 2 frames, got {len(frames)}")
    for role, name in (("leader", leader), ("combiner", combiner)):
        if name is not None and name not in frames:
            raise ParameterError(f"{role} {name!r} is not one of the parties")
    normaliser = parse_normaliser(normalise) if isinstance(normalise, str) else normalise
    ids = {name: _party_ids(name, frame, id_column, normaliser) for name, frame in frames.items()}
    order = align_rows(ids, leader=leader, combiner=combiner, n_jobs=n_jobs)
    return {name: frame.iloc[order[name]].reset_index(drop=True) for name, frame in frames.items()}


def align_rows(
    ids: Mapping[str, list[str]],
    *,
    leader: str | None = None,
    combiner: str | None = None,
    n_jobs: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, list[int]]:
    """Each party's row indices of the common IDs, sorted by ID (see :func:`align`).

    ``ids`` must already be prepared (:func:`prepare_ids`: strings, normalised, no duplicates).
    Raises :class:`DataError` when the intersection is empty.
    """
    names = list(ids)
    if leader is not None:
        names.remove(leader)
        names.insert(0, leader)
    if len(names) == 2:
        a, b = names
        result = run_two_party(ids[a], ids[b], names=(a, b), n_jobs=n_jobs, progress=progress)
        assert result.a.rows is not None and result.b.rows is not None
        rows = {a: [int(r) for r in result.a.rows], b: [int(r) for r in result.b.rows]}
    else:
        rows = dict(run_n_party(ids, leader=names[0], combiner=combiner).rows)
    if not rows[names[0]]:
        raise DataError(f"the {len(ids)} parties have no ID in common")
    return {name: sorted(rows[name], key=ids[name].__getitem__) for name in ids}
