"""Test-only switches. Nothing in here is for production use.

Small keys make tests fast but offer no security. The only way to get one is to enter
:func:`insecure_keys_allowed`, so a small key can never be chosen by accident through a parameter.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["insecure_keys_allowed", "insecure_keys_are_allowed"]

_depth = 0


@contextlib.contextmanager
def insecure_keys_allowed() -> Iterator[None]:
    """Allow key sizes below the security floor inside this ``with`` block (tests only)."""
    global _depth
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1


def insecure_keys_are_allowed() -> bool:
    """True only inside :func:`insecure_keys_allowed`."""
    return _depth > 0
