"""Deterministic synthetic data for credit-risk demos: a bank (label holder) and a retailer.

The two parties see the same customers through different features. Everything is drawn from
one seeded :class:`numpy.random.Generator`, so the same arguments always give the same frames.

How the data is built
---------------------
Every customer has four independent standard-normal latent factors:

``affluence``
    drives income and credit limit (bank) and spend and basket size (retailer), so the two
    parties' features correlate the way they would in real life;
``stress``
    financial stress: drives utilisation and late payments (bank) and, more weakly, returns and
    shopping gaps (retailer);
``stability``
    drives age, tenure, employment and product holding (bank only);
``lifestyle``
    a behaviour pattern that only the retailer observes (returns, online share, purchase gaps).

The default label is drawn from a logistic model whose logit is a *linear function of the bank's
own columns* plus ``retailer_uplift`` times ``lifestyle``; the intercept is solved for so the
expected default rate is 20 %. Writing the bank's part in terms of its observed columns (and not
of the latent factors they measure with noise) is what makes ``retailer_uplift=0`` an exact
negative control: the label is then conditionally independent of every retailer feature given
the bank's features, so any gain from joining the retailer is overfitting noise. With
``retailer_uplift > 0`` the retailer's view of ``lifestyle`` adds genuine discriminative power.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from protocols.errors import ParameterError

__all__ = ["BankRetailerData", "make_bank_retailer"]

FloatArray = npt.NDArray[np.float64]

_TARGET_DEFAULT_RATE = 0.20
_EMPLOYMENT_LEVELS = ("salaried", "self_employed", "retired", "unemployed")
_LOYALTY_TIERS = ("bronze", "silver", "gold", "platinum")
# Share of bank rows whose value is blanked out, per column (realistic gaps for imputation).
_MISSING_SHARE = {"income": 0.02, "months_on_book": 0.015}
# Weight of the retailer-only factor in the default logit when retailer_uplift == 1.
_LIFESTYLE_WEIGHT = 1.2


@dataclass(frozen=True)
class BankRetailerData:
    """The two parties' tables from :func:`make_bank_retailer`.

    Attributes
    ----------
    bank : pandas.DataFrame
        The label holder's table: the ID column, the label column and the bank's features.
    retailer : pandas.DataFrame
        The passive party's table: the ID column and the retailer's features.
    label_column : str
        Name of the 0/1 label column in ``bank``.
    id_column : str
        Name of the customer-ID column in both tables.
    """

    bank: pd.DataFrame
    retailer: pd.DataFrame
    label_column: str = "default"
    id_column: str = "id"


def _check_args(n_customers: int, overlap: float, retailer_uplift: float, seed: int) -> None:
    if isinstance(n_customers, bool) or not isinstance(n_customers, (int, np.integer)):
        raise ParameterError(f"n_customers must be an int; got {type(n_customers).__name__}")
    if n_customers < 10:
        raise ParameterError(f"n_customers must be at least 10; got {n_customers}")
    if not isinstance(overlap, (int, float, np.floating, np.integer)) or isinstance(overlap, bool):
        raise ParameterError(f"overlap must be a number; got {type(overlap).__name__}")
    if not (0.0 < float(overlap) <= 1.0):
        raise ParameterError(f"overlap must be in (0, 1]; got {overlap}")
    if isinstance(retailer_uplift, bool) or not isinstance(
        retailer_uplift, (int, float, np.floating, np.integer)
    ):
        raise ParameterError(
            f"retailer_uplift must be a number; got {type(retailer_uplift).__name__}"
        )
    if not (math.isfinite(float(retailer_uplift)) and retailer_uplift >= 0):
        raise ParameterError(f"retailer_uplift must be finite and >= 0; got {retailer_uplift}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ParameterError(f"seed must be an int; got {type(seed).__name__}")


def _sigmoid(x: FloatArray) -> FloatArray:
    return 1.0 / (1.0 + np.exp(-x))


def _round(x: FloatArray, decimals: int = 0) -> FloatArray:
    # Rounded values look like real records (whole years, incomes to the hundred, ...).
    return np.asarray(np.round(x, decimals), dtype=np.float64)


def _standardise(x: FloatArray) -> FloatArray:
    std = float(x.std())
    return (x - x.mean()) / (std if std > 0 else 1.0)


def _intercept_for_rate(logit: FloatArray, rate: float) -> float:
    """Solve ``mean(sigmoid(logit + c)) == rate`` for ``c`` by bisection (monotone in ``c``)."""
    low, high = -30.0, 30.0
    for _ in range(100):
        mid = (low + high) / 2.0
        if float(_sigmoid(logit + mid).mean()) < rate:
            low = mid
        else:
            high = mid
    return (low + high) / 2.0


def _customer_ids(rng: np.random.Generator, n: int) -> npt.NDArray[np.str_]:
    # Sampling without replacement guarantees uniqueness without a retry loop.
    numbers = rng.choice(10**9, size=n, replace=False)
    return np.array([f"C{int(v):09d}" for v in numbers])


def make_bank_retailer(
    n_customers: int = 4000,
    *,
    overlap: float = 0.8,
    retailer_uplift: float = 1.0,
    seed: int = 0,
) -> BankRetailerData:
    """Generate a bank table (with default labels) and a retailer table that partly overlap.

    Parameters
    ----------
    n_customers : int, default=4000
        Number of distinct customers across both parties (the size of the union).
    overlap : float, default=0.8
        Share of all customers held by both parties, in (0, 1]. The remaining customers are
        split evenly between bank-only and retailer-only (the bank gets the odd one).
    retailer_uplift : float, default=1.0
        Scale of the retailer-only latent factor in the default logit. ``0.0`` is a negative
        control: the retailer's features then carry no label information beyond the bank's.
    seed : int, default=0
        Seed for the :class:`numpy.random.Generator` that draws everything.

    Returns
    -------
    BankRetailerData
        ``bank`` has columns ``id``, ``default`` (int 0/1), ``age``, ``income`` (about 2 %
        missing), ``employment`` (``salaried``/``self_employed``/``retired``/``unemployed``),
        ``credit_limit``, ``utilisation``, ``months_on_book`` (about 1.5 % missing),
        ``late_payments_12m`` and ``n_products``. ``retailer`` has columns ``id``,
        ``monthly_spend``, ``basket_size``, ``returns_rate``, ``online_share``, ``loyalty_tier``
        (``bronze``/``silver``/``gold``/``platinum``) and ``days_since_last_purchase``. IDs are
        unique strings like ``"C012345678"``; each party's rows are shuffled independently.
        Units: ``income``, ``credit_limit``, ``monthly_spend`` and ``basket_size`` (average
        basket value) in currency units; ``utilisation``, ``returns_rate`` and ``online_share``
        as fractions in [0, 1]; ``age`` in years; ``months_on_book`` and
        ``days_since_last_purchase`` as counts. The generator column order is stable.

    Raises
    ------
    ParameterError
        If ``n_customers < 10``, ``overlap`` is not in (0, 1], ``retailer_uplift`` is negative
        or not finite, or an argument has the wrong type.

    Examples
    --------
    >>> data = make_bank_retailer(200, seed=1)
    >>> shared = set(data.bank["id"]) & set(data.retailer["id"])
    >>> len(shared)
    160
    """
    _check_args(n_customers, overlap, retailer_uplift, seed)
    n = int(n_customers)
    rng = np.random.default_rng(seed)

    affluence = rng.standard_normal(n)
    stress = rng.standard_normal(n)
    stability = rng.standard_normal(n)
    lifestyle = rng.standard_normal(n)

    def noise(scale: float) -> FloatArray:
        return scale * rng.standard_normal(n)

    # --- bank features -----------------------------------------------------------------------
    age = np.clip(_round(44.0 + 11.0 * stability + noise(6.0)), 18, 85)
    income = _round(np.exp(10.4 + 0.45 * affluence + 0.08 * stability + noise(0.2)), -2)
    employment_score = 0.8 * stability + 0.4 * affluence - 0.3 * stress + noise(0.7)
    employment = np.where(
        age >= 66,
        "retired",
        np.where(
            employment_score < -1.5,
            "unemployed",
            np.where(employment_score < -0.4, "self_employed", "salaried"),
        ),
    )
    credit_limit = _round(income * np.exp(-1.1 + 0.25 * affluence + noise(0.25)), -2)
    utilisation = _round(_sigmoid(-0.6 + 1.1 * stress - 0.2 * affluence + noise(0.5)), 3)
    months_on_book = np.clip(
        _round(np.exp(3.4 + 0.35 * stability + 0.1 * (age - 44) / 11 + noise(0.35))), 1, 480
    )
    late_payments = rng.poisson(np.exp(-1.3 + 0.9 * stress - 0.2 * stability)).astype(np.int64)
    late_payments = np.minimum(late_payments, 12)
    n_products = np.clip(
        rng.poisson(np.exp(0.6 + 0.25 * stability + 0.15 * affluence)), 1, 8
    ).astype(np.int64)

    # --- retailer features -------------------------------------------------------------------
    monthly_spend = _round(np.exp(5.3 + 0.4 * affluence + 0.15 * lifestyle + noise(0.3)), 2)
    basket_size = _round(np.exp(3.6 + 0.25 * affluence - 0.1 * lifestyle + noise(0.3)), 2)
    returns_rate = _round(_sigmoid(-2.2 + 0.8 * lifestyle + 0.2 * stress + noise(0.3)), 3)
    online_share = _round(_sigmoid(0.2 + 0.7 * lifestyle + noise(0.6)), 3)
    tier_score = np.log(monthly_spend) + noise(0.25)
    tier_cuts = np.quantile(tier_score, [0.45, 0.75, 0.93])
    loyalty_tier = np.asarray(_LOYALTY_TIERS)[np.searchsorted(tier_cuts, tier_score)]
    days_since = np.clip(
        _round(np.exp(2.6 - 0.3 * affluence + 0.45 * lifestyle + 0.1 * stress + noise(0.5))),
        0,
        365,
    ).astype(np.int64)

    # --- label ---------------------------------------------------------------------------------
    # The bank's part of the logit uses only the bank's columns (see the module docstring).
    bank_logit = (
        0.8 * _standardise(utilisation)
        + 0.55 * _standardise(late_payments.astype(np.float64))
        - 0.35 * _standardise(income)
        - 0.25 * _standardise(months_on_book)
        - 0.15 * _standardise(age)
        + np.select([employment == "unemployed", employment == "self_employed"], [0.7, 0.25], 0.0)
    )
    logit = bank_logit + float(retailer_uplift) * _LIFESTYLE_WEIGHT * lifestyle
    logit = logit + _intercept_for_rate(logit, _TARGET_DEFAULT_RATE)
    default = (rng.random(n) < _sigmoid(logit)).astype(np.int64)

    # --- who holds whom --------------------------------------------------------------------------
    # Customers are exchangeable, so the first n_both are shared, then bank-only, then
    # retailer-only; the per-party shuffles below hide that order.
    ids = _customer_ids(rng, n)
    n_both = max(1, round(float(overlap) * n))
    n_bank_only = (n - n_both + 1) // 2
    bank_rows = np.arange(0, n_both + n_bank_only)
    retailer_rows = np.r_[np.arange(0, n_both), np.arange(n_both + n_bank_only, n)]
    bank_rows = rng.permutation(bank_rows)
    retailer_rows = rng.permutation(retailer_rows)

    income_obs = income.astype(np.float64).copy()
    months_obs = months_on_book.astype(np.float64).copy()
    income_obs[rng.random(n) < _MISSING_SHARE["income"]] = np.nan
    months_obs[rng.random(n) < _MISSING_SHARE["months_on_book"]] = np.nan

    bank = pd.DataFrame(
        {
            "id": ids[bank_rows],
            "default": default[bank_rows],
            "age": age[bank_rows].astype(np.int64),
            "income": income_obs[bank_rows],
            "employment": employment[bank_rows],
            "credit_limit": credit_limit[bank_rows],
            "utilisation": utilisation[bank_rows],
            "months_on_book": months_obs[bank_rows],
            "late_payments_12m": late_payments[bank_rows],
            "n_products": n_products[bank_rows],
        }
    )
    retailer = pd.DataFrame(
        {
            "id": ids[retailer_rows],
            "monthly_spend": monthly_spend[retailer_rows],
            "basket_size": basket_size[retailer_rows],
            "returns_rate": returns_rate[retailer_rows],
            "online_share": online_share[retailer_rows],
            "loyalty_tier": loyalty_tier[retailer_rows],
            "days_since_last_purchase": days_since[retailer_rows],
        }
    )
    return BankRetailerData(bank=bank, retailer=retailer)
