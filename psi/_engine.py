"""The compute engine of the PSI roles: hashing to the curve and X25519 over a process pool.

The roles decide what to compute; a :class:`PsiEngine` computes it. Work is cut into tasks of at
most ``task_points`` points, and with ``n_jobs > 1`` the tasks run in a
:class:`concurrent.futures.ProcessPoolExecutor` (``spawn`` start method), at most ``2 * n_jobs``
in flight so memory stays bounded. Data crosses as blobs (IDs: one UTF-8 blob plus ``int64``
offsets; points: concatenated 32-byte u-coordinates), never as one Python object per ID. Workers
only compute deterministic functions of what they are given, so results do not depend on
``n_jobs`` or on the task size.

Where the time goes (2-core machine, PyNaCl 1.6): ``crypto_scalarmult`` about 31 µs; PyNaCl's
wrapper adds about 1 µs per call, so workers call libsodium through PyNaCl's cffi module with one
preallocated output buffer per task (about 0.3 µs of Python per point); SHA-256 hashing about
0.5 µs per ID; pickling a task (a 128 KiB blob) well under 1 ms against about 130 ms of
multiplications. Everything else (validation, matching, shuffling) is NumPy in the parent: at
10^6 IDs per side about 4 s in all (preparing the IDs, sorting and matching 32-byte values,
copying frames), during which the workers wait, against about 64 s of multiplications per core.
Worker start-up (spawn, importing ``psi``) takes about 0.5 s and overlaps with the caller's work;
the pool is meant to be reused across sessions.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from types import TracebackType
from typing import Any

import numpy as np

from protocols.errors import ParameterError
from psi import _ecdh

__all__ = ["DEFAULT_TASK_POINTS", "PsiEngine"]

DEFAULT_TASK_POINTS = 4096
"""Points per task by default (about 130 ms of X25519 multiplications)."""


def _hash_and_multiply_task(
    hash_to_curve: str, salt: bytes, scalar: bytes, id_blob: bytes, offsets: np.ndarray
) -> bytes | None:
    points = _ecdh.hash_blob_to_points(hash_to_curve, salt, id_blob, offsets)
    try:
        return _ecdh.multiply_blob(scalar, points)
    except _ecdh.LowOrderPointError:
        return None


def _multiply_task(scalar: bytes, blob: bytes) -> bytes | None:
    try:
        return _ecdh.multiply_blob(scalar, blob)
    except _ecdh.LowOrderPointError:
        return None


_BROKEN_POOL_HINT = (
    "PsiEngine: a worker process died. Workers (start method 'spawn') re-import the main "
    "module: in a script, run PSI under `if __name__ == '__main__':`, or use n_jobs=1."
)
_MIN_TASK_POINTS = 256  # below this, a call is not worth splitting over processes


def _noop() -> int:
    return os.getpid()


class PsiEngine:
    """Computes hash-to-curve and X25519 multiplications for the PSI roles, in parallel.

    Parameters
    ----------
    n_jobs : int, optional
        Worker processes. ``None`` (default): ``os.cpu_count()``. ``1``: compute in this process,
        no pool. The pool starts on the first call that has more than one task (or on
        :meth:`start`) and is reused by every later call and session until :meth:`close`.
        Workers are started with the ``spawn`` method (safe in threaded programs, no copy of
        this process's memory), so they import the main module: in a script, keep the PSI call
        under ``if __name__ == "__main__":``.
    task_points : int, default 4096
        Points (or IDs) per task sent to a worker.

    Raises
    ------
    ParameterError
        If ``n_jobs`` or ``task_points`` is not a positive int.

    Security
    --------
    The secret scalar of a session is sent to the worker processes (children of this process,
    same user, through OS pipes) with each task; workers keep no state between tasks and draw no
    randomness. Anyone who can read this process's memory can read the workers' too, so this
    adds no exposure beyond the parent's. The engine holds no secret itself.

    Examples
    --------
    >>> from psi import PsiEngine, run_two_party
    >>> with PsiEngine(n_jobs=2) as engine:
    ...     first = run_two_party(["a", "b"], ["b", "c"], engine=engine)
    ...     second = run_two_party(["x"], ["x"], engine=engine)
    >>> first.a.cardinality, second.a.cardinality
    (1, 1)
    """

    def __init__(self, n_jobs: int | None = None, *, task_points: int = DEFAULT_TASK_POINTS):
        if n_jobs is None:
            n_jobs = os.cpu_count() or 1
        for name, value in (("n_jobs", n_jobs), ("task_points", task_points)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ParameterError(f"{name} must be a positive int, got {value!r}")
        self._n_jobs = n_jobs
        self._task_points = task_points
        self._executor: ProcessPoolExecutor | None = None
        self._closed = False
        self.on_progress: Callable[[int], None] | None = None
        """Called with the number of scalar multiplications of each finished task."""

    @property
    def n_jobs(self) -> int:
        """Number of worker processes (1: in-process)."""
        return self._n_jobs

    @property
    def task_points(self) -> int:
        """Points per task."""
        return self._task_points

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> PsiEngine:
        """Start the worker processes now (otherwise they start on first use).

        Returns at once: the workers import their modules while this process goes on (e.g.
        preparing the IDs); the first computation waits for them.
        """
        if self._closed:
            raise ParameterError("this PsiEngine has been closed")
        if self._n_jobs > 1 and self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=self._n_jobs, mp_context=multiprocessing.get_context("spawn")
            )
            # Spawn every worker now, so start-up overlaps with the caller's own work.
            for _ in range(self._n_jobs):
                self._executor.submit(_noop)
        return self

    def close(self) -> None:
        """Shut the pool down (waits for the workers to exit). Idempotent."""
        self._closed = True
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> PsiEngine:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __getstate__(self) -> Any:
        raise TypeError("PsiEngine owns worker processes and cannot be pickled")

    # -- work -----------------------------------------------------------------------------
    def hash_and_multiply(
        self,
        hash_to_curve: str,
        salt: bytes,
        scalar: bytes,
        id_blob: bytes,
        offsets: np.ndarray,
    ) -> bytes:
        """``X25519(scalar, H(id))`` for each ID of the blob, as one blob of points.

        Raises :class:`psi._ecdh.LowOrderPointError` if an ID hashes to a small-order point.
        """
        n = offsets.size - 1

        def task(lo: int, hi: int) -> tuple[Any, ...]:
            start, end = int(offsets[lo]), int(offsets[hi])
            return (hash_to_curve, salt, scalar, id_blob[start:end], offsets[lo : hi + 1] - start)

        return self._run(_hash_and_multiply_task, task, n)

    def multiply(self, scalar: bytes, blob: bytes) -> bytes:
        """``X25519(scalar, p)`` for each 32-byte point of ``blob``.

        Raises :class:`psi._ecdh.LowOrderPointError` if a point has small order.
        """
        size = _ecdh.POINT_BYTES

        def task(lo: int, hi: int) -> tuple[Any, ...]:
            return (scalar, blob[lo * size : hi * size])

        return self._run(_multiply_task, task, len(blob) // size)

    # -- internals ------------------------------------------------------------------------
    def _use_pool(self, n: int) -> bool:
        """Whether a call of ``n`` points goes to the workers (starting them if needed)."""
        if self._n_jobs == 1:
            return False
        if n > self._task_points:
            return True
        # A small call is split over running workers, but does not start them.
        return self._executor is not None and n >= self._n_jobs * _MIN_TASK_POINTS

    def _bounds(self, n: int, use_pool: bool) -> list[tuple[int, int]]:
        """Task boundaries: equal sizes, at most ``task_points``; a multiple of ``n_jobs``."""
        if n == 0:
            return []
        count = -(-n // self._task_points)
        if use_pool:
            count = -(-count // self._n_jobs) * self._n_jobs
        count = min(count, n)
        edges = np.linspace(0, n, count + 1).round().astype(np.int64).tolist()
        return list(itertools.pairwise(edges))

    def _report(self, n_points: int) -> None:
        if self.on_progress is not None:
            self.on_progress(n_points)

    def _run(
        self,
        fn: Callable[..., bytes | None],
        task: Callable[[int, int], tuple[Any, ...]],
        n: int,
    ) -> bytes:
        """Run ``fn(*task(lo, hi))`` over the task bounds of ``n`` points; join the outputs."""
        if self._closed:
            raise ParameterError("this PsiEngine has been closed")
        out = bytearray(_ecdh.POINT_BYTES * n)
        use_pool = self._use_pool(n)
        bounds = self._bounds(n, use_pool)
        if not use_pool:
            for lo, hi in bounds:
                result = fn(*task(lo, hi))
                if result is None:
                    raise _ecdh.LowOrderPointError
                out[lo * _ecdh.POINT_BYTES : hi * _ecdh.POINT_BYTES] = result
                self._report(hi - lo)
            return bytes(out)
        executor = self.start()._executor
        assert executor is not None
        pending: deque[tuple[int, int, Future[bytes | None]]] = deque()
        window = 2 * self._n_jobs
        bound_iter = iter(bounds)
        failed = False
        try:
            while True:
                while len(pending) < window:
                    bound = next(bound_iter, None)
                    if bound is None:
                        break
                    lo, hi = bound
                    pending.append((lo, hi, executor.submit(fn, *task(lo, hi))))
                if not pending:
                    break
                # Tasks are of equal size, so waiting in submission order costs little.
                lo, hi, future = pending.popleft()
                try:
                    result = future.result()
                except BrokenProcessPool as exc:
                    exc.add_note(_BROKEN_POOL_HINT)
                    raise
                if result is None:
                    failed = True
                    break
                out[lo * _ecdh.POINT_BYTES : hi * _ecdh.POINT_BYTES] = result
                self._report(hi - lo)
        finally:
            for _, _, future in pending:
                future.cancel()
            for _, _, future in pending:
                if not future.cancelled():
                    future.exception()  # wait, so no task outlives this call
        if failed:
            raise _ecdh.LowOrderPointError
        return bytes(out)
