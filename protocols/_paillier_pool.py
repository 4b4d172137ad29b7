"""Compute engine of the Paillier backend: fixed-base randomness, a store of it, a process pool.

What lives here and why:

* :class:`KeyContext` holds what one public key ``(n, h_s)`` needs to make encryption randomness
  ``h_s^a`` fast: a fixed-base table (row ``j`` holds ``h_s^(d * 2^(w j))`` for every ``w``-bit
  digit ``d``, so ``h_s^a`` is one multiplication per window of ``a``), and a *store* of values
  made in advance (:meth:`KeyContext.precompute`) that encryptions consume, each exactly once.
  Key objects with the same ``(n, h_s)`` in one process share one context (the estimator runs
  every role in one process and each role decodes its own copy of the key).
* The table starts with 8-bit windows (``key_bits / 16`` multiplications per value, 17 MB for a
  2048-bit key) and is rebuilt once with the widest windows that fit ``TABLE_BUDGET_BYTES``
  (13 bits for 2048-bit keys: 79 multiplications per value, about 370 MB, 3.6 s to build; 11
  bits for 3072-bit keys) when the values made so far would have paid for the rebuild, so tests
  with many small short-lived keys never build a large one. A process keeps one wide table.
* One process pool per process (``n_jobs`` workers, lazily started with the ``forkserver``
  method, shut down at exit): :func:`parallelism` sets ``n_jobs`` (``None``: every core; ``1``: no
  pool at all). Work is cut into chunks only when it is big enough to pay for the round trip
  (about 20 ms); ciphertexts cross as fixed-width byte blobs. With a pool, idle workers refill
  the store in the background (:class:`KeyContext`), so the calling process's own serial work
  (serialisation, additions, decryption) overlaps with making randomness.
* Where the time goes (2048-bit key, one 2-core machine, all roles in one process, batch 1024):
  per sample and epoch two fresh encryptions (79 multiplications modulo ``n^2`` each, about
  5.8 us per multiplication) and ``X^T [[d]]`` (about 6 multiplications per continuous feature
  value, 1 to 2 per value of a categorical one; :mod:`protocols._multiexp`).

Security: every worker draws the exponents ``a`` from the operating system (:mod:`secrets`) at the
moment it computes them; no worker holds a pseudo-random generator state, so nothing copied by
``fork`` can repeat randomness across workers. The parent hands each stored value to exactly one
ciphertext (values are popped from the store). Workers receive public values only (``n``,
``h_s``, ciphertexts, plaintext multipliers of the calling party).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import math
import multiprocessing
import os
import secrets
import threading
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import gmpy2
import numpy as np

from protocols._multiexp import batch_invert, plan_columns, signed_column_products
from protocols.errors import ParameterError

__all__ = [
    "KeyContext",
    "context_for",
    "column_products",
    "get_n_jobs",
    "parallelism",
    "shutdown",
]

_BASE_WINDOW = 8
_MAX_WINDOW = 13
#: Largest fixed-base table a process builds for one key (13-bit windows for 2048-bit keys).
TABLE_BUDGET_BYTES = 384 * 2**20
#: Work below this many seconds stays in the calling process.
_MIN_PARALLEL_SECONDS = 0.02
#: Seconds of work per background chunk (a foreground task waits at most this long per worker).
_BACKGROUND_SECONDS = 0.04
_WORKER_CONTEXTS = 2  # keys a worker keeps tables for


def _mulmod_seconds(key_bits: int) -> float:
    """Rough cost of one multiplication modulo n^2 (5.8 us for 2048-bit n on the reference box)."""
    return 5.8e-6 * (key_bits / 2048) ** 1.6


# -- fixed-base table ---------------------------------------------------------------------------
class _Table:
    """``rows[j][d] = base^(d * 2^(w j))`` for every digit ``d`` of a ``w``-bit window."""

    __slots__ = ("rows", "window")

    def __init__(self, base: gmpy2.mpz, modulus: gmpy2.mpz, exponent_bits: int, window: int):
        rows = []
        g = base
        remaining = exponent_bits
        while remaining > 0:
            width = min(window, remaining)
            row = [gmpy2.mpz(1), g]
            for _ in range(2, 1 << width):
                row.append(row[-1] * g % modulus)
            rows.append(row)
            remaining -= width
            if remaining > 0:
                g = row[-1] * g % modulus  # g^(2^width): the next window's base
        self.rows = rows
        self.window = window

    @staticmethod
    def size_bytes(key_bits: int, exponent_bits: int, window: int) -> int:
        return -(-exponent_bits // window) * (1 << window) * (key_bits // 4 + 56)

    def digits(self, raw: bytes, count: int, exponent_bytes: int) -> list[list[int]]:
        """Window digits of ``count`` little-endian exponents, one list per table row."""
        octets = np.frombuffer(raw, dtype=np.uint8).reshape(count, exponent_bytes)
        if self.window == 8:
            return octets.T.tolist()
        w, n_rows = self.window, len(self.rows)
        bits = np.zeros((count, n_rows * w), dtype=np.uint8)
        bits[:, : exponent_bytes * 8] = np.unpackbits(octets, axis=1, bitorder="little")
        bits3 = bits.reshape(count, n_rows, w)
        digits = np.zeros((n_rows, count), dtype=np.int64)
        for k in range(w):
            digits |= bits3[:, :, k].T.astype(np.int64) << k
        return digits.tolist()

    def powers(self, columns: list[list[int]], modulus: gmpy2.mpz) -> list[gmpy2.mpz]:
        """``prod_j rows[j][d_j]`` for every exponent, one table row at a time (cache-friendly)."""
        rows = self.rows
        accs = [rows[0][d] for d in columns[0]]
        for row, column in zip(rows[1:], columns[1:]):
            accs = [acc * row[d] % modulus for acc, d in zip(accs, column)]
        return accs


# -- per-key context ----------------------------------------------------------------------------
class KeyContext:
    """Table, counters and store of randomness ``h_s^a`` for one public key ``(n, h_s)``.

    Store and background refill (parent process only): stored values are handed out by
    :meth:`take`, each once. With a pool, every request of ``count`` values also sets a *reserve*
    of ``2 * count``; while the store plus the values in flight are below it, each worker gets one
    background chunk (about 40 ms), and each finished chunk is chained by the next, so workers
    make randomness whenever the calling process has nothing else for them. Once the caller
    precomputes explicitly (:meth:`precompute`), the automatic refill stops for this key: the
    caller decides when randomness is made (e.g. between epochs).
    """

    def __init__(self, n: gmpy2.mpz, hs: gmpy2.mpz) -> None:
        self.n = gmpy2.mpz(n)
        self.nsquare = self.n * self.n
        self.hs = gmpy2.mpz(hs)
        self.key_bits = int(self.n.bit_length())
        self.exponent_bytes = self.key_bits // 16  # a has key_bits / 2 bits
        self._table: _Table | None = None
        self._made = 0  # values made in this process (drives the table upgrade)
        self._lock = threading.Lock()
        self._store: deque[gmpy2.mpz] = deque()
        self._pending: dict[Future[bytes], int] = {}  # future -> values it will add
        self._background = 0  # background chunks in flight
        self._reserve = 0
        self._manual = False
        width = self.key_bits // 8
        self.key_blob = (self.n.to_bytes(width, "little"), self.hs.to_bytes(2 * width, "little"))

    # -- table ------------------------------------------------------------------------------
    def _wide_window(self) -> int:
        bits = self.exponent_bytes * 8
        for w in range(_MAX_WINDOW, _BASE_WINDOW, -1):
            if _Table.size_bytes(self.key_bits, bits, w) <= TABLE_BUDGET_BYTES:
                return w
        return _BASE_WINDOW

    def table(self) -> _Table:
        bits = self.exponent_bytes * 8
        if self._table is None:
            self._table = _Table(self.hs, self.nsquare, bits, _BASE_WINDOW)
        elif self._table.window == _BASE_WINDOW:
            wide = self._wide_window()
            if wide > _BASE_WINDOW:
                build = -(-bits // wide) << wide
                saved = -(-bits // _BASE_WINDOW) - -(-bits // wide)
                if self._made * saved >= build:  # the past would have paid for it
                    _claim_wide_table(self)
                    self._table = None  # free the small table first
                    self._table = _Table(self.hs, self.nsquare, bits, wide)
                    self._made = 0  # a key that loses its wide table must earn it again
        return self._table

    def windows(self) -> int:
        """Multiplications per value with the current table (8-bit until upgraded)."""
        window = self._table.window if self._table is not None else _BASE_WINDOW
        return -(-self.exponent_bytes * 8 // window)

    def factors_from_bytes(self, raw: bytes, count: int) -> list[gmpy2.mpz]:
        """``h_s^a`` for ``count`` exponents ``a``, read little-endian from ``raw``."""
        if len(raw) != count * self.exponent_bytes:
            raise ValueError("need exactly exponent_bytes random bytes per value")
        if count == 0:
            return []
        table = self.table()
        values = table.powers(table.digits(raw, count, self.exponent_bytes), self.nsquare)
        self._made += count
        return values

    def make(self, count: int, token_bytes: Callable[[int], bytes]) -> list[gmpy2.mpz]:
        """``count`` fresh values computed here; one ``token_bytes`` call per exponent."""
        raw = b"".join(token_bytes(self.exponent_bytes) for _ in range(count))
        return self.factors_from_bytes(raw, count)

    def _value_seconds(self) -> float:
        """Seconds per value with this process's table (8-bit windows until it widens)."""
        return self.windows() * _mulmod_seconds(self.key_bits)

    def _worker_value_seconds(self) -> float:
        """Seconds per value in a busy worker (which soon has the wide table)."""
        bits = self.exponent_bytes * 8
        return -(-bits // self._wide_window()) * _mulmod_seconds(self.key_bits)

    # -- store ------------------------------------------------------------------------------
    @property
    def available(self) -> int:
        with self._lock:
            return len(self._store)

    def take(self, count: int) -> list[gmpy2.mpz]:
        """Up to ``count`` stored values, removed from the store (each value is used once)."""
        with self._lock:
            k = min(count, len(self._store))
            return [self._store.popleft() for _ in range(k)]

    def _submit(self, executor: ProcessPoolExecutor, count: int, background: bool) -> Future[bytes]:
        future = executor.submit(_task_randomness, self.key_blob, count)
        with self._lock:
            self._pending[future] = count
            self._background += background
        # weakly: when every key object of this context is gone, its chunks stop chaining
        future.add_done_callback(functools.partial(_landed, weakref.ref(self), background))
        return future

    def _landed(self, future: Future[bytes], background: bool) -> None:
        """Done-callback of a chunk bound for the store (runs in the pool's thread)."""
        values: list[gmpy2.mpz] = []
        with contextlib.suppress(BaseException):  # a broken pool or a cancelled chunk: no values
            values = _from_blob(future.result(), self.key_bits // 4)
        with self._lock:
            self._pending.pop(future, None)
            self._background -= background
            self._store.extend(values)
        if values and background:
            self._top_up()

    def _top_up(self) -> None:
        pool = _pool
        if pool is None or self._reserve <= 0 or get_n_jobs() <= 1:
            return
        chunk = max(1, math.ceil(_BACKGROUND_SECONDS / self._worker_value_seconds()))
        with self._lock:
            deficit = self._reserve - len(self._store) - sum(self._pending.values())
            free = max(0, _pool_jobs - self._background)
            wanted = min(free, max(0, math.ceil(deficit / chunk)))
        for _ in range(wanted):
            with contextlib.suppress(RuntimeError):  # the pool is shutting down
                self._submit(pool, chunk, background=True)

    def wait(self) -> None:
        """Block until every chunk bound for the store has landed there."""
        for future in list(self._pending):
            with contextlib.suppress(BaseException):
                future.result()

    def precompute(self, count: int, *, wait: bool = True) -> None:
        """Make ``count`` values and add them to the store (in the pool when there is one)."""
        if count <= 0:
            return
        self._manual = True  # the caller plans ahead: no automatic background refill
        self._reserve = 0
        executor = _executor()
        if executor is None:
            values = self.make(count, secrets.token_bytes)
            with self._lock:
                self._store.extend(values)
            return
        for k in _chunks(count, _chunk_size(self, count)):
            self._submit(executor, k, background=False)
        if wait:
            self.wait()

    def random_factors(self, count: int, token_bytes: Callable[[int], bytes]) -> list[gmpy2.mpz]:
        """``count`` fresh values: from the store first, the rest computed now."""
        values = self.take(count)
        missing = count - len(values)
        if missing:
            values.extend(self._compute(missing, token_bytes))
        big = count * self._value_seconds() >= _MIN_PARALLEL_SECONDS
        if _pool is not None and big and not self._manual:
            # what one call asked for is what the next is likely to ask for: keep two ready
            self._reserve = max(self._reserve, 2 * count)
            self._top_up()
        return values

    def _compute(self, count: int, token_bytes: Callable[[int], bytes]) -> list[gmpy2.mpz]:
        seconds = count * self._value_seconds()
        executor = _executor() if seconds >= _MIN_PARALLEL_SECONDS else None
        if executor is None:
            return self.make(count, token_bytes)
        futures = [
            executor.submit(_task_randomness, self.key_blob, k)
            for k in _chunks(count, _chunk_size(self, count))
        ]
        try:
            blobs = [f.result() for f in futures]
        except BrokenProcessPool:
            _reset_executor()
            return self.make(count, token_bytes)
        width = self.key_bits // 4
        return [v for blob in blobs for v in _from_blob(blob, width)]


def _landed(
    ref: weakref.ReferenceType[KeyContext], background: bool, future: Future[bytes]
) -> None:
    ctx = ref()
    if ctx is not None:
        ctx._landed(future, background)


def _chunk_size(ctx: KeyContext, count: int) -> int:
    # two chunks per worker balance uneven workers; at least ~20 ms of work per chunk
    per_value = ctx._value_seconds()
    floor = max(1, math.ceil(_MIN_PARALLEL_SECONDS / per_value))
    return max(floor, math.ceil(count / (2 * get_n_jobs())))


def _chunks(count: int, size: int) -> list[int]:
    return [min(size, count - start) for start in range(0, count, size)]


_wide_owner: weakref.ReferenceType[KeyContext] | None = None  # the context with a wide table


def _claim_wide_table(ctx: KeyContext) -> None:
    """At most one wide table per process (about 370 MB for a 2048-bit key): drop the other."""
    global _wide_owner
    previous = _wide_owner() if _wide_owner is not None else None
    if previous is not None and previous is not ctx:
        previous._table = None
    _wide_owner = weakref.ref(ctx)


_CONTEXTS: weakref.WeakValueDictionary[bytes, KeyContext] = weakref.WeakValueDictionary()
_CONTEXTS_LOCK = threading.Lock()


def _digest(n: gmpy2.mpz, hs: gmpy2.mpz) -> bytes:
    width = (int(n.bit_length()) + 7) // 8
    return hashlib.sha256(n.to_bytes(width, "big") + hs.to_bytes(2 * width, "big")).digest()


def context_for(n: gmpy2.mpz, hs: gmpy2.mpz) -> KeyContext:
    """The shared context of public key ``(n, h_s)`` in this process (kept while referenced)."""
    digest = _digest(gmpy2.mpz(n), gmpy2.mpz(hs))
    with _CONTEXTS_LOCK:
        ctx = _CONTEXTS.get(digest)
        if ctx is None:
            ctx = KeyContext(n, hs)
            _CONTEXTS[digest] = ctx
        return ctx


# -- blobs --------------------------------------------------------------------------------------
def _to_blob(values: Sequence[gmpy2.mpz], width: int) -> bytes:
    return b"".join([v.to_bytes(width, "little") for v in values])


def _from_blob(blob: bytes, width: int) -> list[gmpy2.mpz]:
    view = memoryview(blob)
    return [gmpy2.mpz.from_bytes(view[i : i + width], "little") for i in range(0, len(blob), width)]


# -- worker side --------------------------------------------------------------------------------
_worker_contexts: OrderedDict[tuple[bytes, bytes], KeyContext] = OrderedDict()


def _worker_context(key: tuple[bytes, bytes]) -> KeyContext:
    ctx = _worker_contexts.get(key)
    if ctx is None:
        n = gmpy2.mpz.from_bytes(key[0], "little")
        hs = gmpy2.mpz.from_bytes(key[1], "little")
        ctx = KeyContext(n, hs)
        _worker_contexts[key] = ctx
        while len(_worker_contexts) > _WORKER_CONTEXTS:
            _worker_contexts.popitem(last=False)
    _worker_contexts.move_to_end(key)
    return ctx


def _task_randomness(key: tuple[bytes, bytes], count: int) -> bytes:
    """Worker: ``count`` values ``h_s^a`` with exponents from the operating system."""
    ctx = _worker_context(key)
    raw = secrets.token_bytes(count * ctx.exponent_bytes)
    return _to_blob(ctx.factors_from_bytes(raw, count), ctx.key_bits // 4)


def _task_columns(
    modulus_blob: bytes,
    width: int,
    bases_blob: bytes,
    exponents: np.ndarray,
    inverses_blob: bytes = b"",
) -> bytes:
    """Worker: ``signed_column_products`` over the given rows and columns."""
    modulus = gmpy2.mpz.from_bytes(modulus_blob, "little")
    bases = _from_blob(bases_blob, width)
    inverses = _from_blob(inverses_blob, width) if inverses_blob else None
    return _to_blob(signed_column_products(bases, exponents, modulus, inverses), width)


def _task_invert(modulus_blob: bytes, width: int, bases_blob: bytes) -> bytes:
    """Worker: inverses of the given bases (Montgomery's trick)."""
    modulus = gmpy2.mpz.from_bytes(modulus_blob, "little")
    return _to_blob(batch_invert(_from_blob(bases_blob, width), modulus), width)


# -- column products (X^T [[d]]) ----------------------------------------------------------------
def column_products(
    bases: Sequence[gmpy2.mpz], exponents: np.ndarray, modulus: gmpy2.mpz, key_bits: int
) -> list[gmpy2.mpz]:
    """``prod_i bases[i] ** exponents[i, j] mod modulus`` per column, over the pool if it pays.

    Columns (in the units of work :func:`plan_columns` finds) are dealt to the workers longest
    first onto the least loaded; a call with fewer units than two per worker is cut by rows
    instead, each worker returning partial products that are multiplied here.
    """
    exponents = np.asarray(exponents, dtype=np.int64)
    m, p = exponents.shape
    plan = plan_columns(exponents) if m and p else None
    units = plan.units if plan is not None else []
    seconds = sum(cost for _, cost in units) * _mulmod_seconds(key_bits)
    executor = _executor() if seconds >= _MIN_PARALLEL_SECONDS else None
    if executor is None:
        return signed_column_products(bases, exponents, modulus)
    jobs = get_n_jobs()
    width = key_bits // 4
    modulus_blob = modulus.to_bytes(width, "little")
    all_rows = np.arange(m)
    tasks: list[tuple[np.ndarray, np.ndarray]] = []  # (rows, columns)
    if len(units) >= 2 * jobs:
        groups: list[list[int]] = [[] for _ in range(jobs)]
        loads = [0.0] * jobs
        for columns, cost in sorted(units, key=lambda unit: -unit[1]):
            k = loads.index(min(loads))
            groups[k].extend(columns)
            loads[k] += cost
        tasks = [(all_rows, np.array(sorted(g))) for g in groups if g]
    else:
        parts = min(jobs, max(1, m // 64))
        tasks = [(rows, np.arange(p)) for rows in np.array_split(all_rows, parts)]
    blob = _to_blob(bases, width) if any(len(r) == m for r, _ in tasks) else b""
    try:
        inverses_blob = b""
        if len(tasks) > 1 and blob and plan is not None and plan.inverses:
            # invert once, split over the workers, instead of once in every column task
            parts = [p for p in np.array_split(all_rows, jobs) if p.size]
            pieces = [
                executor.submit(
                    _task_invert, modulus_blob, width, blob[p[0] * width : (p[-1] + 1) * width]
                )
                for p in parts
            ]
            inverses_blob = b"".join(f.result() for f in pieces)
        futures = []
        for rows, cols in tasks:
            whole = len(rows) == m
            rows_blob = blob if whole else _to_blob([bases[i] for i in rows], width)
            sub = np.ascontiguousarray(exponents[np.ix_(rows, cols)])
            extra = inverses_blob if whole else b""
            futures.append(
                executor.submit(_task_columns, modulus_blob, width, rows_blob, sub, extra)
            )
        results = [_from_blob(f.result(), width) for f in futures]
    except BrokenProcessPool:
        _reset_executor()
        return signed_column_products(bases, exponents, modulus)
    out: list[gmpy2.mpz | None] = [None] * p
    for (_, cols), values in zip(tasks, results):
        for j, v in zip(cols.tolist(), values):
            held = out[j]
            out[j] = v if held is None else held * v % modulus
    return [gmpy2.mpz(1) if v is None else v for v in out]


# -- the process pool ---------------------------------------------------------------------------
_n_jobs: int | None = None
_executor_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None
_pool_jobs = 0


def _check_jobs(n_jobs: int | None) -> int | None:
    if n_jobs is None:
        return None
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs < 1:
        raise ParameterError(f"n_jobs must be None or a positive int, got {n_jobs!r}")
    return n_jobs


def get_n_jobs() -> int:
    """Worker processes the Paillier backend uses now (1: none, everything in this process)."""
    return _n_jobs if _n_jobs is not None else (os.cpu_count() or 1)


@contextlib.contextmanager
def parallelism(n_jobs: int | None) -> Iterator[None]:
    """Use ``n_jobs`` worker processes inside this block (``None``: every core; ``1``: no pool).

    Raises
    ------
    ParameterError
        If ``n_jobs`` is not ``None`` or a positive int.
    """
    global _n_jobs
    checked = _check_jobs(n_jobs)
    previous, _n_jobs = _n_jobs, checked
    try:
        yield
    finally:
        _n_jobs = previous


def set_n_jobs(n_jobs: int | None) -> None:
    """Set the number of worker processes for the rest of this process (see :func:`parallelism`)."""
    global _n_jobs
    _n_jobs = _check_jobs(n_jobs)


def _executor() -> ProcessPoolExecutor | None:
    global _pool, _pool_jobs
    jobs = get_n_jobs()
    if jobs <= 1:
        return None
    with _executor_lock:
        if _pool is not None and _pool_jobs != jobs:
            _pool.shutdown(wait=False, cancel_futures=True)
            _pool = None
        if _pool is None:
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context(
                "forkserver" if "forkserver" in methods else "spawn"
            )
            _pool = ProcessPoolExecutor(max_workers=jobs, mp_context=context)
            _pool_jobs = jobs
        return _pool


def _reset_executor() -> None:
    global _pool
    with _executor_lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=False, cancel_futures=True)


def shutdown() -> None:
    """Stop the worker processes (they start again on the next parallel call)."""
    global _pool
    with _executor_lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)


atexit.register(shutdown)
