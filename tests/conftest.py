from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from protocols.testing import insecure_keys_allowed

#: Key size for tests: small keys are fast and only usable inside the test-only switch.
TEST_KEY_BITS = 512

_SHARED = Path(os.environ.get("VFL_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))
DEFAULT_CREDIT = _SHARED / "data" / "default_credit"


@pytest.fixture
def small_keys() -> Iterator[None]:
    """Allow 512-bit keys for the duration of one test."""
    with insecure_keys_allowed():
        yield


@pytest.fixture(scope="session")
def default_credit() -> tuple[pd.DataFrame, pd.DataFrame]:
    """(guest with id, y, x0..x12; host with id, x0..x9), skipped only if the folder is absent."""
    if not (DEFAULT_CREDIT / "guest.csv").exists():
        pytest.skip(f"{DEFAULT_CREDIT} is absent")
    guest = pd.read_csv(DEFAULT_CREDIT / "guest.csv", dtype={"id": str})
    host = pd.read_csv(DEFAULT_CREDIT / "host.csv", dtype={"id": str})
    return guest, host
