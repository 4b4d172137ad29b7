"""Encryptions of zero for the CKKS backend, made ahead of time in the shared worker pool.

A CKKS public-key encryption is an encryption of zero plus the encoded plaintext; the first part
(sampling ``u``, ``e0``, ``e1`` and three NTTs per prime, about 3 ms at ``N = 8192``) does not
depend on the values. With a pool (``n_jobs > 1``, :func:`protocols.paillier.parallelism`),
workers make those zeros in the background while the calling process does its serial work, and
an encryption then costs one load, one encoding and one addition (about 1 ms).

Each stored zero is handed to exactly one ciphertext (popped from the store). Workers hold public
material only. SEAL draws the randomness of every encryption from a PRNG it seeds from the
operating system (``std::random_device``) at that encryption, in the worker as in this process;
no generator state is ever copied between processes.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import weakref
from collections import OrderedDict, deque
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

import tenseal.sealapi as seal

from protocols import _paillier_pool as _shared_pool
from protocols._ckks_io import _load, _save
from protocols._paillier_pool import _executor, get_n_jobs

__all__ = ["ZeroStore", "store_for"]

#: Zeros per worker task (about 35 ms of work at N = 8192: long enough to pay for the trip).
CHUNK = 8
#: Most zeros kept ready per depth (about 20 MB at N = 8192), however large the requests.
MAX_RESERVE = 64
_WORKER_KEYS = 2


class ZeroStore:
    """Serialised encryptions of zero at each depth, refilled by background worker tasks.

    :meth:`take` returns stored bytes or ``None`` (the caller then encrypts itself);
    :meth:`want` sets how many zeros of a depth to keep ready (four times the largest
    request) and tops the store up. Without a pool nothing is stored and nothing is submitted.
    """

    def __init__(self, key_blob: tuple[bytes, bytes], depths: int) -> None:
        self.key_blob = key_blob
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._store: list[deque[bytes]] = [deque() for _ in range(depths)]
        self._pending = [0] * depths
        self._reserve = [0] * depths

    def _forked(self) -> None:
        """In a child made by fork: forget the parent's zeros and tasks (call with the lock)."""
        if self._pid != os.getpid():  # the child must never reuse its parent's zeros
            self._pid = os.getpid()
            for stored in self._store:
                stored.clear()
            self._pending = [0] * len(self._pending)

    def available(self, depth: int) -> int:
        with self._lock:
            self._forked()
            return len(self._store[depth])

    def take(self, depth: int) -> bytes | None:
        with self._lock:
            self._forked()
            return self._store[depth].popleft() if self._store[depth] else None

    def want(self, depth: int, count: int) -> None:
        """Keep about ``4 * count`` zeros of ``depth`` ready (background, if there is a pool).

        Four requests' worth: the parties of a training round ask one after another.
        """
        if get_n_jobs() <= 1:
            return
        with self._lock:
            self._forked()
            self._reserve[depth] = min(MAX_RESERVE, max(self._reserve[depth], 4 * count))
        self._top_up(_executor())  # a foreground call may start the pool

    def _plan(self) -> list[int]:
        """Depths to submit a task for now, neediest first (call with the lock held)."""
        # one task in flight per worker but one: the calling process keeps a core for itself
        free = max(1, get_n_jobs() - 1) - sum(self._pending)
        shortfall = {
            depth: reserve - len(stored) - self._pending[depth] * CHUNK
            for depth, (reserve, stored) in enumerate(zip(self._reserve, self._store))
        }
        plan = []
        while free > 0:
            depth = max(shortfall, key=lambda d: shortfall[d] / max(1, self._reserve[d]))
            if shortfall[depth] <= 0:
                break
            plan.append(depth)
            shortfall[depth] -= CHUNK
            free -= 1
        for depth in plan:
            self._pending[depth] += 1
        return plan

    def _top_up(self, executor: ProcessPoolExecutor | None) -> None:
        if executor is None:
            return
        with self._lock:
            plan = self._plan()
        for depth in plan:
            try:
                future = executor.submit(_task_zeros, self.key_blob, len(self._store), depth, CHUNK)
            except RuntimeError:  # the pool is shutting down
                with self._lock:
                    self._pending[depth] -= 1
                continue
            future.add_done_callback(functools.partial(_landed, weakref.ref(self), depth))

    def _landed(self, depth: int, future: Future[list[bytes]]) -> None:
        blobs: list[bytes] = []
        with contextlib.suppress(BaseException):  # a broken pool or a cancelled task: no zeros
            blobs = future.result()
        with self._lock:
            self._pending[depth] -= 1
            self._store[depth].extend(blobs)
        if blobs:  # chained refills use the running pool only: never restart a shut-down one
            self._top_up(_shared_pool._pool)


def _landed(ref: weakref.ReferenceType[ZeroStore], depth: int, future: Future[list[bytes]]) -> None:
    store = ref()
    if store is not None:
        store._landed(depth, future)


class _EncryptOnlyKey:
    """Parameters and public key only: what a worker needs to make encryptions of zero."""

    def __init__(self, params_bytes: bytes, public_bytes: bytes, depths: int) -> None:
        parms = seal.EncryptionParameters(seal.SCHEME_TYPE.CKKS)
        _load(parms, None, params_bytes, "parameters")
        self.context = seal.SEALContext(parms, True, seal.SEC_LEVEL_TYPE.TC128)
        public = seal.PublicKey()
        _load(public, self.context, public_bytes, "public key")
        self.encryptor = seal.Encryptor(self.context, public)
        self.parms_ids = []
        data = self.context.first_context_data()
        for _ in range(depths):
            self.parms_ids.append(data.parms_id())
            data = data.next_context_data()

    def zero(self, depth: int) -> Any:
        ct = seal.Ciphertext()
        self.encryptor.encrypt_zero(self.parms_ids[depth], ct)
        return ct

    def zero_bytes(self, depth: int) -> bytes:
        return _save(self.zero(depth))


_STORES: weakref.WeakValueDictionary[bytes, ZeroStore] = weakref.WeakValueDictionary()
_STORES_LOCK = threading.Lock()


def store_for(fingerprint: bytes, key_blob: tuple[bytes, bytes], depths: int) -> ZeroStore:
    """One store of zeros per public key and process (each role decodes its own key copy)."""
    with _STORES_LOCK:
        store = _STORES.get(fingerprint)
        if store is None:
            store = ZeroStore(key_blob, depths)
            _STORES[fingerprint] = store
        return store


# -- worker side --------------------------------------------------------------------------------
_worker_keys: OrderedDict[tuple[bytes, bytes], _EncryptOnlyKey] = OrderedDict()


def _worker_key(key_blob: tuple[bytes, bytes], depths: int) -> _EncryptOnlyKey:
    key = _worker_keys.get(key_blob)
    if key is None:
        key = _EncryptOnlyKey(*key_blob, depths)
        _worker_keys[key_blob] = key
        while len(_worker_keys) > _WORKER_KEYS:
            _worker_keys.popitem(last=False)
    _worker_keys.move_to_end(key_blob)
    return key


def _task_zeros(key_blob: tuple[bytes, bytes], depths: int, depth: int, count: int) -> list[bytes]:
    """Worker: ``count`` serialised encryptions of zero at ``depth``."""
    key = _worker_key(key_blob, depths)
    return [key.zero_bytes(depth) for _ in range(count)]
