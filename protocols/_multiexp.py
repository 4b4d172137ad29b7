"""Multi-exponentiation ``prod_i b_i^{e_i} mod N``: the kernel of ``X^T [[d]]`` under Paillier.

Three strategies, chosen per product by a cost model counted in modular multiplications:

* **digits** (Pippenger's bucket method): cut exponents into windows of ``c`` bits; per window,
  multiply each base into the bucket of its digit and sum ``d * bucket[d]`` with two running
  products. About ``(b / c) * (m + 2^(c+1))`` multiplications for ``m`` bases and ``b``-bit
  exponents instead of ``1.5 * m * b`` for one ``powmod`` per term. With the inverses of the
  bases at hand, *signed* digits in ``[-2^(c-1), 2^(c-1))`` halve the buckets (a negative digit
  multiplies the inverse into the bucket of its absolute value).
* **values**: when few distinct exponents occur (standardised categorical features, the
  intercept), multiply each base into the bucket of its whole exponent (one multiplication per
  term), then combine the ``K`` buckets through suffix products ``S_k`` and the gaps
  ``v_k - v_(k-1)`` of the sorted values: ``prod B_k^(v_k) = prod S_k^(v_k - v_(k-1))``, a
  multi-exponentiation of only ``K`` terms (solved recursively).
* **powmod**: a handful of terms, one GMP ``powmod`` each (GMP's Montgomery loop is cheaper per
  multiplication than a Python-level ``a * b % N``).

:func:`signed_column_products` computes every column of ``X^T`` applied to one vector of bases
in one call, with signed exponents: positive and negative multipliers are accumulated apart
(negative ones on inverted bases, or in a second product inverted once), so no exponent is
ever offset or reduced modulo anything.
"""

from __future__ import annotations

from collections.abc import Sequence

import gmpy2
import numpy as np

__all__ = [
    "batch_invert",
    "column_units",
    "multi_exp",
    "plan_columns",
    "signed_column_products",
]

_MONTGOMERY = 0.8  # a multiplication inside GMP's powmod, relative to a Python-level a * b % N
_MAX_WINDOW = 16


def _digit_cost(terms: int, bits: int, c: int, signed: bool) -> float:
    windows = -(-(bits + signed) // c)
    buckets = (1 << (c - 1)) if signed else (1 << c) - 1
    # the running-product sum costs two multiplications per bucket index, empty or not
    return windows * (terms + 2 * buckets) + (windows - 1) * c * _MONTGOMERY


def _best_window(terms: int, bits: int, signed: bool) -> tuple[float, int]:
    return min((_digit_cost(terms, bits, c, signed), c) for c in range(1, _MAX_WINDOW + 1))


def _powmod_cost(terms: int, bits: int) -> float:
    return terms * (1.2 * bits * _MONTGOMERY + 1)


def _as_exponents(exponents: Sequence[int] | np.ndarray) -> list[int]:
    if isinstance(exponents, np.ndarray):
        array = np.asarray(exponents, dtype=np.int64).ravel()
        if array.size and int(array.min()) < 0:
            raise ValueError("multi_exp takes non-negative exponents")
        return [int(e) for e in array.tolist()]
    out = [int(e) for e in exponents]
    if any(e < 0 for e in out):
        raise ValueError("multi_exp takes non-negative exponents")
    return out


def multi_exp(
    bases: Sequence[gmpy2.mpz], exponents: Sequence[int] | np.ndarray, modulus: gmpy2.mpz
) -> gmpy2.mpz:
    """Return ``prod(bases[i] ** exponents[i]) % modulus`` for non-negative exponents."""
    modulus = gmpy2.mpz(modulus)
    exps = _as_exponents(exponents)
    if len(exps) != len(bases):
        raise ValueError(f"{len(bases)} bases but {len(exps)} exponents")
    chosen = [(b, e) for b, e in zip(bases, exps) if e]
    if not chosen:
        return gmpy2.mpz(1) % modulus
    return _multi_exp([b for b, _ in chosen], [e for _, e in chosen], modulus) % modulus


def _multi_exp(bases: list[gmpy2.mpz], exps: list[int], mod: gmpy2.mpz) -> gmpy2.mpz:
    """The product for positive exponents (result possibly unreduced when a single term)."""
    terms = len(bases)
    if terms == 1:
        return gmpy2.powmod(bases[0], exps[0], mod)
    bits = max(exps).bit_length()
    distinct = len(set(exps))
    digit_cost, c = _best_window(terms, bits, signed=False)
    costs = {"powmod": _powmod_cost(terms, bits), "digits": digit_cost}
    if distinct < terms:
        rest = min(_powmod_cost(distinct, bits), _best_window(distinct, bits, False)[0])
        costs["values"] = terms + distinct + rest
    strategy = min(costs, key=costs.__getitem__)
    if strategy == "powmod":
        result = gmpy2.powmod(bases[0], exps[0], mod)
        for b, e in zip(bases[1:], exps[1:]):
            result = result * gmpy2.powmod(b, e, mod) % mod
        return result
    if strategy == "values":
        return _by_values(bases, exps, mod)
    digits = _unsigned_digits(np.array(exps, dtype=object if bits > 62 else np.int64), bits, c)
    return _bucket_windows(digits, c, bases, None, None, mod, (1 << c) - 1)


def _by_values(bases: list[gmpy2.mpz], exps: list[int], mod: gmpy2.mpz) -> gmpy2.mpz:
    groups: dict[int, gmpy2.mpz] = {}
    for b, e in zip(bases, exps):
        held = groups.get(e)
        groups[e] = b if held is None else held * b % mod
    values = sorted(groups)
    suffix: list[gmpy2.mpz] = []
    running: gmpy2.mpz | None = None
    for v in reversed(values):
        running = groups[v] if running is None else running * groups[v] % mod
        suffix.append(running)
    suffix.reverse()
    gaps = [values[0]] + [values[k] - values[k - 1] for k in range(1, len(values))]
    return _multi_exp(suffix, gaps, mod)


def _unsigned_digits(exps: np.ndarray, bits: int, c: int) -> list[list[int]]:
    windows = -(-bits // c)
    mask = (1 << c) - 1
    if exps.dtype == object:  # exponents beyond int64 (recursion on huge gaps): plain Python
        return [[(int(e) >> (k * c)) & mask for e in exps] for k in range(windows)]
    shifts = np.arange(windows, dtype=np.int64) * c
    return ((exps[None, :] >> shifts[:, None]) & mask).tolist()


def _signed_digits(magnitudes: np.ndarray, c: int) -> np.ndarray:
    """Digits in ``[-2^(c-1), 2^(c-1))`` with ``sum d_k 2^(ck) = magnitude`` (shape windows x m)."""
    full, half = 1 << c, 1 << (c - 1)
    rest = magnitudes.astype(np.int64, copy=True)
    rows = []
    while rest.any():  # about ceil((bits + 1) / c) windows: the last carry may need one more
        digit = rest & (full - 1)
        rest >>= c
        carry = digit >= half
        rows.append(np.where(carry, digit - full, digit))
        rest += carry
    return np.array(rows, dtype=np.int64).reshape(len(rows), magnitudes.size)


def _bucket_windows(
    digits: list[list[int]] | np.ndarray,
    c: int,
    bases: Sequence[gmpy2.mpz],
    inverses: Sequence[gmpy2.mpz] | None,
    negative: np.ndarray | None,
    mod: gmpy2.mpz,
    top_bucket: int,
) -> gmpy2.mpz:
    """Windowed bucket accumulation, most significant window first.

    ``digits[k][i]`` is the digit of term ``i`` in window ``k``; with ``inverses``, digits may be
    negative and ``negative[i]`` flips the sign of term ``i`` (a negative exponent).
    """
    result: gmpy2.mpz | None = None
    shift = gmpy2.mpz(1) << c
    for k in range(len(digits) - 1, -1, -1):
        if result is not None:
            result = gmpy2.powmod(result, shift, mod)
        buckets: list[gmpy2.mpz | None] = [None] * (top_bucket + 1)
        if inverses is None:
            for base, digit in zip(bases, digits[k]):
                if digit:
                    held = buckets[digit]
                    buckets[digit] = base if held is None else held * base % mod
        else:
            assert negative is not None and isinstance(digits, np.ndarray)
            row = digits[k]
            nonzero = np.flatnonzero(row)
            direct = (row[nonzero] > 0) != negative[nonzero]  # else the inverse
            chosen = [
                bases[i] if d else inverses[i] for i, d in zip(nonzero.tolist(), direct.tolist())
            ]
            for digit, base in zip(np.abs(row[nonzero]).tolist(), chosen):
                held = buckets[digit]
                buckets[digit] = base if held is None else held * base % mod
        # sum_d d * bucket[d] as a running product of suffix products (2 mults per bucket)
        running: gmpy2.mpz | None = None
        total: gmpy2.mpz | None = None
        for digit in range(top_bucket, 0, -1):
            bucket = buckets[digit]
            if bucket is not None:
                running = bucket if running is None else running * bucket % mod
            if running is not None:
                total = running if total is None else total * running % mod
        if total is not None:
            result = total if result is None else result * total % mod
    return gmpy2.mpz(1) if result is None else result


def batch_invert(values: Sequence[gmpy2.mpz], modulus: gmpy2.mpz) -> list[gmpy2.mpz]:
    """Inverses of every value modulo ``modulus`` with one inversion (Montgomery's trick).

    Raises ``ZeroDivisionError`` if some value is not a unit.
    """
    if not values:
        return []
    prefix = [values[0] % modulus]
    for v in values[1:]:
        prefix.append(prefix[-1] * v % modulus)
    inverse = gmpy2.invert(prefix[-1], modulus)  # ZeroDivisionError for a non-unit
    out: list[gmpy2.mpz] = [gmpy2.mpz(0)] * len(values)
    for i in range(len(values) - 1, 0, -1):
        out[i] = inverse * prefix[i - 1] % modulus
        inverse = inverse * values[i] % modulus
    out[0] = inverse
    return out


def _estimate(terms: int, bits: int, distinct: int) -> float:
    """What :func:`_multi_exp` would spend on ``terms`` positive exponents (its own choice)."""
    if terms <= 1:
        return _powmod_cost(terms, bits)
    cost = min(_powmod_cost(terms, bits), _best_window(terms, bits, signed=False)[0])
    if distinct < terms:
        rest = min(_powmod_cost(distinct, bits), _best_window(distinct, bits, False)[0])
        cost = min(cost, terms + distinct + rest)
    return cost


def _signed_cost(magnitudes: np.ndarray, c: int) -> float:
    """Multiplications of the signed-digit pass on these magnitudes with ``c``-bit windows."""
    digits = np.abs(_signed_digits(magnitudes, c))
    fill = int(np.count_nonzero(digits))
    aggregate = 2 * int(digits.max(axis=1).sum()) if digits.size else 0
    return fill + aggregate + (len(digits) - 1) * c * _MONTGOMERY


class _ColumnPlan:
    """Costs of one column: split by sign (no inverses needed) or signed digits (inverses)."""

    __slots__ = ("c", "distinct", "plain_cost", "signed_cost")

    def __init__(self, column: np.ndarray) -> None:
        self.plain_cost = 0.0
        self.signed_cost = float("inf")
        self.c = 0
        self.distinct = 0
        magnitudes = []
        for part in (column[column > 0], -column[column < 0]):
            if part.size:
                bits = int(part.max()).bit_length()
                distinct = int(np.unique(part).size)
                self.distinct += distinct
                self.plain_cost += _estimate(part.size, bits, distinct)
                magnitudes.append(part)
        if len(magnitudes) == 2:
            self.plain_cost += 6  # one inversion
        if magnitudes:
            # equal exponents are merged first (their bases and inverses multiplied together)
            distinct_values = np.unique(column[column != 0])
            merged = 2 * (sum(part.size for part in magnitudes) - distinct_values.size)
            every = np.abs(distinct_values)
            estimate, c = _best_window(every.size, int(every.max()).bit_length(), signed=True)
            if estimate + merged < 1.5 * self.plain_cost:  # a contender: count its real cost
                self.signed_cost, self.c = min(
                    (_signed_cost(every, w) + merged, w) for w in (c - 1, c, c + 1) if 2 <= w <= 16
                )

    @property
    def cost(self) -> float:
        return min(self.plain_cost, self.signed_cost)


class _MatrixPlan:
    """How :func:`signed_column_products` computes a matrix of exponents.

    * ``inverses``: whether to invert the bases (when signed digits save more than ``3 m``);
    * ``units``: groups of columns computed together, with their estimated cost. A column on
      signed digits is a unit of its own. Columns with few distinct values whose *joint* value
      patterns are few too (standardised categorical features) share one bucket fill: each
      base is multiplied into the bucket of its row's pattern once, and every column of the
      group is then a small product over the patterns.
    """

    def __init__(self, exponents: np.ndarray) -> None:
        m = exponents.shape[0]
        self.columns = [_ColumnPlan(col) for col in exponents.T]
        without = sum(p.plain_cost for p in self.columns)
        with_inverses = 3 * m + sum(p.cost for p in self.columns)
        self.inverses = with_inverses < without
        self.digits = [self.inverses and p.signed_cost < p.plain_cost for p in self.columns]
        limit = max(2, m // 6)
        shareable = [
            j for j, p in enumerate(self.columns) if not self.digits[j] and 0 < p.distinct <= limit
        ]
        groups: list[list[int]] = []
        patterns: list[np.ndarray] = []  # per group: each row's pattern number
        for j in sorted(shareable, key=lambda j: self.columns[j].distinct):
            values, code = np.unique(exponents[:, j], return_inverse=True)
            code = code.reshape(-1)
            for g, group in enumerate(groups):
                joint = np.unique(patterns[g] * values.size + code, return_inverse=True)[1]
                if int(joint.max()) < limit:
                    group.append(j)
                    patterns[g] = joint.reshape(-1)
                    break
            else:
                groups.append([j])
                patterns.append(code)
        grouped = {j for g in groups for j in g}
        self.units: list[tuple[list[int], float]] = [
            ([j], p.cost if self.digits[j] else p.plain_cost)
            for j, p in enumerate(self.columns)
            if j not in grouped
        ]
        for group in groups:
            cost = sum(self.columns[j].plain_cost for j in group) - 0.9 * m * (len(group) - 1)
            self.units.append((group, max(cost, float(m))))


def column_costs(exponents: np.ndarray) -> list[float]:
    """Estimated multiplications of each column of :func:`signed_column_products`."""
    return [_ColumnPlan(col).cost for col in np.asarray(exponents, dtype=np.int64).T]


def column_units(exponents: np.ndarray) -> list[tuple[list[int], float]]:
    """Groups of columns best computed together, with estimated multiplications each."""
    return _MatrixPlan(np.asarray(exponents, dtype=np.int64)).units


def plan_columns(exponents: np.ndarray) -> _MatrixPlan:
    """The plan :func:`signed_column_products` follows (its ``units`` and ``inverses``)."""
    return _MatrixPlan(np.asarray(exponents, dtype=np.int64))


def signed_column_products(
    bases: Sequence[gmpy2.mpz],
    exponents: np.ndarray,
    modulus: gmpy2.mpz,
    inverses: Sequence[gmpy2.mpz] | None = None,
) -> list[gmpy2.mpz]:
    """``prod_i bases[i] ** exponents[i, j] mod modulus`` for every column ``j``.

    ``exponents`` is an ``(m, p)`` int64 array below ``2^62`` in magnitude; negative ones need
    bases that are units. The inverses of the bases (one inversion and ``3 m`` multiplications)
    are computed when signed digits save more than that over all columns; otherwise each column
    multiplies its positive and its negative terms apart and inverts the second product once.
    See :class:`_MatrixPlan` for columns that share work. ``inverses``, if given, are the
    inverses of ``bases`` (computed elsewhere, e.g. split over processes).
    """
    modulus = gmpy2.mpz(modulus)
    exponents = np.asarray(exponents, dtype=np.int64)
    if exponents.ndim != 2 or exponents.shape[0] != len(bases):
        raise ValueError(f"exponents of shape {exponents.shape} for {len(bases)} bases")
    if exponents.size and (int(exponents.min()) <= -(2**62) or int(exponents.max()) >= 2**62):
        raise ValueError("signed_column_products takes exponents below 2^62 in magnitude")
    plan = _MatrixPlan(exponents)
    if not plan.inverses:
        inverses = None
    elif inverses is None:
        inverses = batch_invert(list(bases), modulus)
    elif len(inverses) != len(bases):
        raise ValueError(f"{len(inverses)} inverses for {len(bases)} bases")
    out: list[gmpy2.mpz] = [gmpy2.mpz(1)] * exponents.shape[1]
    for columns, _ in plan.units:
        if len(columns) > 1:
            # one multiplication per base into the bucket of its row's pattern over the group
            keys, which = np.unique(exponents[:, columns], axis=0, return_inverse=True)
            patterns: list[gmpy2.mpz | None] = [None] * keys.shape[0]
            for base, k in zip(bases, which.reshape(-1).tolist()):
                held = patterns[k]
                patterns[k] = base if held is None else held * base % modulus
            shared = [gmpy2.mpz(1) if v is None else v for v in patterns]
            for t, j in enumerate(columns):
                out[j] = _by_sign(shared, keys[:, t], None, modulus)
            continue
        (j,) = columns
        column = exponents[:, j]
        if plan.digits[j]:
            assert inverses is not None
            values, chosen, flipped = _merge_equal(bases, inverses, column, modulus)
            c = plan.columns[j].c
            digits = _signed_digits(np.abs(values), c)
            result = _bucket_windows(digits, c, chosen, flipped, values < 0, modulus, 1 << (c - 1))
            out[j] = result % modulus
        else:
            out[j] = _by_sign(bases, column, None, modulus)
    return out


def _merge_equal(
    bases: Sequence[gmpy2.mpz],
    inverses: Sequence[gmpy2.mpz],
    column: np.ndarray,
    mod: gmpy2.mpz,
) -> tuple[np.ndarray, list[gmpy2.mpz], list[gmpy2.mpz]]:
    """One term per distinct non-zero exponent: the product of its bases, and of their inverses.

    Two multiplications per repeated value instead of one per window for each of its terms
    (payment amounts repeat: zero, round sums).
    """
    rows = np.flatnonzero(column)
    values, which = np.unique(column[rows], return_inverse=True)
    which = which.reshape(-1)
    chosen: list[gmpy2.mpz | None] = [None] * values.size
    flipped: list[gmpy2.mpz | None] = [None] * values.size
    for i, k in zip(rows.tolist(), which.tolist()):
        held = chosen[k]
        if held is None:
            chosen[k], flipped[k] = bases[i], inverses[i]
        else:
            chosen[k] = held * bases[i] % mod
            flipped[k] = flipped[k] * inverses[i] % mod
    return values, [b for b in chosen if b is not None], [b for b in flipped if b is not None]


def _by_sign(
    bases: Sequence[gmpy2.mpz],
    column: np.ndarray,
    inverses: Sequence[gmpy2.mpz] | None,
    mod: gmpy2.mpz,
) -> gmpy2.mpz:
    rows = np.flatnonzero(column).tolist()
    values = column.tolist()
    if inverses is not None:
        chosen = [bases[i] if values[i] > 0 else inverses[i] for i in rows]
        return _multi_exp(chosen, [abs(values[i]) for i in rows], mod) % mod
    positive = [i for i in rows if values[i] > 0]
    negative = [i for i in rows if values[i] < 0]
    result = gmpy2.mpz(1)
    if positive:
        result = _multi_exp([bases[i] for i in positive], [values[i] for i in positive], mod)
    if negative:
        denominator = _multi_exp([bases[i] for i in negative], [-values[i] for i in negative], mod)
        result = result * gmpy2.invert(denominator, mod)
    return result % mod
