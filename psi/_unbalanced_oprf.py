"""The 2HashDH OPRF over Ed25519's prime-order group, the server's key, and its tag sets.

OPRF (2HashDH, Jarecki, Kiayias and Krawczyk, "Round-optimal password-protected secret sharing
and T-PAKE in the password-only model", ASIACRYPT 2014; the same construction as RFC 9497's
OPRF mode, here over the prime-order subgroup of Ed25519 instead of ristretto255)::

    H(x)     = hash_to_group(utf8(x), salt)                    (psi._ed25519: Elligator 2, SHA-512)
    F_k(x)   = Hash2(x, k * H(x))
    Hash2    = SHA-256(TAG_DOMAIN || salt || encode(k * H(x)) || utf8(x))[:16]

``TAG_DOMAIN`` (a constant ending in a zero byte), the 32-byte salt and the 32-byte point have
fixed lengths and the ID comes last, so the hash input is unambiguous. Evaluation with blinding:
the client sends ``r * H(x)`` for a fresh scalar ``r``, the server returns ``k * (r * H(x))``,
the client multiplies by ``r^-1`` and gets ``k * H(x)`` without the server learning ``x``.

Tags are 16 bytes: a client ID not in the server's set matches one of the server's tags with
probability at most ``|Y| / 2^128``, so a whole run has a false match with probability at most
``|X| * |Y| / 2^128`` (below ``2^-60`` even for ``|X| = 2^20`` client IDs against ``|Y| = 2^40``
server IDs). Shorter tags would shrink the one-time download at the cost of this bound.

Files (all big-endian, each ends in the SHA-256 of everything before it; written atomically
with mode 0600)::

    key file    b"VFLPSIUK" | version u16 = 1 | key_id 16 | salt 32 | scalar 32         | sha256
    tag set     b"VFLPSIUS" | version u16 = 1 | tag_bytes u16 | key_id 16 | salt 32
                            | count u64 | tags (count x 16, ascending)                  | sha256
    table       b"VFLPSIUT" | version u16 = 1 | tag_bytes u16 | key_id 16 | salt 32
                            | count u64 | tags (count x 16, ascending) | rows (count x u64) | sha256

The key id is ``SHA-256(KEY_ID_DOMAIN || k * B || salt)[:16]`` (``B`` the Ed25519 base
point), so it names the key and salt without revealing ``k``. The tag set's digest is
``SHA-256(DIGEST_DOMAIN || key_id || salt || count u64 || tags)``.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import struct
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import nacl.bindings as sodium
import numpy as np

from protocols.errors import (
    DataError,
    InsecureParametersError,
    ParameterError,
)
from psi import _ed25519 as ed

__all__ = [
    "SUITE",
    "TAG_BYTES",
    "OprfKey",
    "ServerTagTable",
    "TagSet",
    "batch_invert",
    "blind",
    "finalize",
    "unblind",
]

SUITE = "2hashdh-ed25519-elligator2-sha512-sha256-t16/v1"
"""Name of the OPRF suite (hash to group, group, tag hash, tag length); both sides check it."""

TAG_BYTES = 16
SALT_BYTES = 32
KEY_ID_BYTES = 16
DIGEST_BYTES = 32
NONCE_BYTES = 16
FILE_VERSION = 1
MAX_ITEMS = (1 << 32) - 1
DEFAULT_CHUNK_ITEMS = 4096
"""IDs per precomputation task (about 0.5 s of work per task)."""

TAG_DTYPE = np.dtype(f"S{TAG_BYTES}")
_DOMAIN = b"vfl-he/psi-u/" + SUITE.encode("ascii")
_TAG_DOMAIN = _DOMAIN + b"/tag\x00"
_KEY_ID_DOMAIN = _DOMAIN + b"/key-id\x00"
_DIGEST_DOMAIN = _DOMAIN + b"/tag-set-digest\x00"
_SESSION_DOMAIN = _DOMAIN + b"/session-id\x00"
# The standard Ed25519 base point (RFC 8032), compressed.
_BASE_POINT = bytes.fromhex("58" + "66" * 31)

_KEY_MAGIC = b"VFLPSIUK"
_TAG_SET_MAGIC = b"VFLPSIUS"
_TABLE_MAGIC = b"VFLPSIUT"
_FILE_HEADER = struct.Struct(">8sH")
_SET_HEADER = struct.Struct(f">H{KEY_ID_BYTES}s{SALT_BYTES}sQ")
_CHECKSUM_BYTES = hashlib.sha256().digest_size

PathLike = str | os.PathLike[str]


# -- IDs and OPRF steps --------------------------------------------------------------------------
def dedupe(ids: Sequence[str]) -> tuple[list[str], list[int]]:
    """Distinct IDs in first-seen order and the row index of each one's first occurrence.

    Raises
    ------
    ParameterError
        If ``ids`` is a single string.
    DataError
        If an ID is not a ``str``.
    """
    if isinstance(ids, (str, bytes)):
        raise ParameterError("ids must be a sequence of str, not a single string")
    first: dict[str, int] = {}
    for row, item in enumerate(ids):
        if not isinstance(item, str):
            raise DataError(f"IDs must be str; the item at row {row} is {type(item).__name__}")
        first.setdefault(item, row)
    return list(first), list(first.values())


def encode_ids(ids: Sequence[str]) -> list[bytes]:
    """UTF-8 encode each ID; raises :class:`DataError` for strings with lone surrogates."""
    out = []
    for row, item in enumerate(ids):
        try:
            out.append(item.encode("utf-8"))
        except UnicodeEncodeError:
            raise DataError(f"distinct ID number {row} is not encodable as UTF-8") from None
    return out


def blind(hashed: bytes, scalars: Sequence[bytes]) -> bytes:
    """``r_i * P_i`` for each point of ``hashed`` (own points) and its own scalar ``r_i``."""
    _check_pairing(hashed, scalars)
    step = ed.POINT_BYTES
    return b"".join(
        ed.scalar_mult(r, hashed[i * step : (i + 1) * step]) for i, r in enumerate(scalars)
    )


def unblind(evaluated: bytes, inverses: Sequence[bytes]) -> bytes:
    """``r_i^-1 * Q_i`` for each (validated) point of ``evaluated``: gives ``k * H(x_i)``."""
    return blind(evaluated, inverses)


def finalize(ids: Sequence[bytes], points: bytes, salt: bytes) -> bytes:
    """The tags ``Hash2(x_i, k * H(x_i))`` (16 bytes each, concatenated) of encoded IDs."""
    if len(points) != ed.POINT_BYTES * len(ids):
        raise ValueError("one point per ID is needed")
    prefix = hashlib.sha256(_TAG_DOMAIN + salt)
    step = ed.POINT_BYTES
    out = []
    for i, item in enumerate(ids):
        h = prefix.copy()
        h.update(points[i * step : (i + 1) * step])
        h.update(item)
        out.append(h.digest()[:TAG_BYTES])
    return b"".join(out)


def batch_invert(scalars: Sequence[bytes]) -> list[bytes]:
    """Inverses of non-zero scalars with one inversion (Montgomery's trick).

    One ``crypto_core_ed25519_scalar_invert`` costs about 35 µs, three scalar multiplications
    modulo ``L`` about 5 µs.
    """
    if not scalars:
        return []
    prefix = [scalars[0]]
    for s in scalars[1:]:
        prefix.append(ed.multiply_scalars(prefix[-1], s))
    inverse = ed.invert(prefix[-1])
    out: list[bytes] = [b""] * len(scalars)
    for i in range(len(scalars) - 1, 0, -1):
        out[i] = ed.multiply_scalars(inverse, prefix[i - 1])
        inverse = ed.multiply_scalars(inverse, scalars[i])
    out[0] = inverse
    return out


def derive_session_id(client_nonce: bytes, server_nonce: bytes) -> bytes:
    """16-byte session id from both parties' nonces, in role order."""
    return hashlib.sha256(_SESSION_DOMAIN + client_nonce + server_nonce).digest()[:16]


def tags_digest(key_id: bytes, salt: bytes, tags: np.ndarray) -> bytes:
    """Digest naming a tag set (key id, salt, count and the sorted tags)."""
    h = hashlib.sha256(_DIGEST_DOMAIN + key_id + salt + struct.pack(">Q", tags.size))
    h.update(tags.tobytes())
    return h.digest()


def _key_id(scalar: bytes, salt: bytes) -> bytes:
    public = ed.scalar_mult(scalar, _BASE_POINT)
    return hashlib.sha256(_KEY_ID_DOMAIN + public + salt).digest()[:KEY_ID_BYTES]


def _check_pairing(points: bytes, scalars: Sequence[bytes]) -> None:
    if len(points) != ed.POINT_BYTES * len(scalars):
        raise ValueError("one scalar per point is needed")


def _tags_worker(job: tuple[bytes, bytes, list[bytes]]) -> bytes:
    """Precomputation task: tags of a chunk of encoded IDs (runs in a worker process).

    Deterministic: the worker gets the key scalar and salt as bytes and draws no randomness.
    """
    scalar, salt, ids = job
    evaluated = ed.scalar_mult(scalar, ed.hash_to_group(ids, salt))
    return finalize(ids, evaluated, salt)


def tags_array(blob: bytes) -> np.ndarray:
    """View a blob of concatenated tags as a 1-D array of ``S16`` (no copy)."""
    return np.frombuffer(blob, dtype=TAG_DTYPE)


def strictly_ascending(tags: np.ndarray) -> bool:
    """Whether the tags are sorted and distinct."""
    return bool(np.all(tags[1:] > tags[:-1]))


# -- files ---------------------------------------------------------------------------------------
def _pack_file(magic: bytes, payload: bytes) -> bytes:
    body = _FILE_HEADER.pack(magic, FILE_VERSION) + payload
    return body + hashlib.sha256(body).digest()


def _unpack_file(data: bytes, magic: bytes, what: str) -> bytes:
    """Check magic, version and checksum; return the payload. Raises :class:`DataError`."""
    if len(data) < _FILE_HEADER.size + _CHECKSUM_BYTES:
        raise DataError(f"{what}: {len(data)} bytes is shorter than any valid file")
    got_magic, version = _FILE_HEADER.unpack_from(data, 0)
    if got_magic != magic:
        raise DataError(f"{what}: not a {what} (wrong magic bytes)")
    if version != FILE_VERSION:
        raise DataError(f"{what}: unsupported file version {version} (expected {FILE_VERSION})")
    body, checksum = data[:-_CHECKSUM_BYTES], data[-_CHECKSUM_BYTES:]
    if hashlib.sha256(body).digest() != checksum:
        raise DataError(f"{what}: checksum mismatch (the file is truncated or corrupted)")
    return body[_FILE_HEADER.size :]


def _read(path: PathLike, what: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        raise ParameterError(f"{what}: no file at {os.fspath(path)!r}") from None


def _write_private(path: PathLike, data: bytes, *, overwrite: bool, what: str) -> None:
    """Write atomically (temporary file in the same folder, then rename) with mode 0600."""
    target = Path(path)
    if not overwrite and target.exists():
        raise ParameterError(f"{what}: {os.fspath(target)!r} exists (pass overwrite=True)")
    # mkstemp creates the file with mode 0600, so the bytes are never readable by others.
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _pack_set(key_id: bytes, salt: bytes, tags: np.ndarray) -> bytes:
    return _SET_HEADER.pack(TAG_BYTES, key_id, salt, tags.size) + tags.tobytes()


def _unpack_set(payload: bytes, what: str, row_bytes: int) -> tuple[bytes, bytes, bytes, bytes]:
    """Split a tag-set payload into key id, salt, tags blob and the trailing per-row blob."""
    if len(payload) < _SET_HEADER.size:
        raise DataError(f"{what}: header truncated")
    tag_bytes, key_id, salt, count = _SET_HEADER.unpack_from(payload, 0)
    if tag_bytes != TAG_BYTES:
        raise DataError(f"{what}: tags of {tag_bytes} bytes, expected {TAG_BYTES}")
    expected = _SET_HEADER.size + count * (TAG_BYTES + row_bytes)
    if len(payload) != expected:
        raise DataError(f"{what}: {count} tags need {expected} payload bytes, got {len(payload)}")
    end = _SET_HEADER.size + count * TAG_BYTES
    return key_id, salt, payload[_SET_HEADER.size : end], payload[end:]


# -- the server's key ----------------------------------------------------------------------------
class OprfKey:
    """The server's long-term OPRF key ``k`` and the public hash salt that goes with it.

    Create one with :meth:`generate`, keep it with :meth:`save` (a file of its own, mode 0600,
    never shipped with the tag table), and reload it with :meth:`load`.

    Parameters
    ----------
    scalar : bytes
        32-byte canonical non-zero scalar modulo the group order. Use :meth:`generate`; a fixed
        scalar is only for known-answer tests.
    salt : bytes
        32-byte hash-to-group salt (public).

    Raises
    ------
    ParameterError
        If the scalar is not canonical or zero, or the salt is not 32 bytes.

    Security
    --------
    ``k`` never leaves this object except into :meth:`save` and, as bytes through a local
    pipe, into the worker processes of :meth:`ServerTagTable.precompute`. The object cannot be
    pickled or copied and its ``repr`` shows only the key id. Anyone holding ``k`` can compute
    every tag offline, i.e. test any ID against the server's set without rate limits: keep the
    key file readable by the server's account only (:meth:`load` refuses a key file that group
    or others may read). Rotate the key (new key, new table, clients download again) when the
    server's set changes, when a client may have queried too many IDs, or on a schedule.
    """

    def __init__(self, scalar: bytes, salt: bytes) -> None:
        if not isinstance(scalar, bytes) or len(scalar) != ed.SCALAR_BYTES:
            raise ParameterError(f"the scalar must be {ed.SCALAR_BYTES} bytes")
        if sodium.crypto_core_ed25519_scalar_reduce(scalar + bytes(32)) != scalar:
            raise ParameterError("the scalar is not reduced modulo the group order")
        if not any(scalar):
            raise ParameterError("the scalar must not be zero")
        if not isinstance(salt, bytes) or len(salt) != SALT_BYTES:
            raise ParameterError(f"the salt must be {SALT_BYTES} bytes")
        self._scalar = scalar
        self._salt = salt
        self._key_id = _key_id(scalar, salt)

    @classmethod
    def generate(cls) -> OprfKey:
        """A fresh key: a uniform non-zero scalar and a random salt, from :mod:`secrets`."""
        return cls(ed.new_scalar(), os.urandom(SALT_BYTES))

    @property
    def key_id(self) -> bytes:
        """16-byte public id of this key and salt."""
        return self._key_id

    @property
    def salt(self) -> bytes:
        """32-byte public hash-to-group salt."""
        return self._salt

    def __repr__(self) -> str:
        return f"OprfKey(key_id={self._key_id.hex()})"

    def __getstate__(self) -> NoReturn:
        raise TypeError("OprfKey holds a secret scalar and cannot be pickled")

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        raise TypeError("OprfKey holds a secret scalar and cannot be copied")

    def evaluate(self, blinded: bytes, expected_count: int, what: str) -> bytes:
        """``k * P`` for each point of a peer's blob, after validating every point.

        Raises
        ------
        RemoteProtocolError
            If the blob does not hold ``expected_count`` valid prime-order points.
        """
        ed.validate_points(blinded, expected_count, what)
        return ed.scalar_mult(self._scalar, blinded)

    def save(self, path: PathLike, *, overwrite: bool = False) -> None:
        """Write the key file (mode 0600, atomically).

        Raises
        ------
        ParameterError
            If the file exists and ``overwrite`` is false.
        """
        payload = self._key_id + self._salt + self._scalar
        _write_private(path, _pack_file(_KEY_MAGIC, payload), overwrite=overwrite, what="key")

    @classmethod
    def load(cls, path: PathLike) -> OprfKey:
        """Read a key file written by :meth:`save`.

        Raises
        ------
        ParameterError
            If there is no such file.
        InsecureParametersError
            If group or others may read or write the file (POSIX); ``chmod 600`` it.
        DataError
            If the file is not a key file, has another version, is truncated or corrupted.
        """
        if os.name == "posix":
            try:
                mode = os.stat(path).st_mode
            except FileNotFoundError:
                raise ParameterError(f"key: no file at {os.fspath(path)!r}") from None
            if mode & 0o077:
                raise InsecureParametersError(
                    f"key file {os.fspath(path)!r} has mode {mode & 0o777:o}; it must be "
                    "accessible to its owner only (chmod 600)"
                )
        payload = _unpack_file(_read(path, "key"), _KEY_MAGIC, "key file")
        if len(payload) != KEY_ID_BYTES + SALT_BYTES + ed.SCALAR_BYTES:
            raise DataError(f"key file: payload of {len(payload)} bytes has the wrong size")
        key_id = payload[:KEY_ID_BYTES]
        salt = payload[KEY_ID_BYTES : KEY_ID_BYTES + SALT_BYTES]
        try:
            key = cls(payload[KEY_ID_BYTES + SALT_BYTES :], salt)
        except ParameterError:
            raise DataError("key file: invalid scalar") from None
        if key.key_id != key_id:
            raise DataError("key file: the stored key id does not match the key")
        return key


# -- tag sets ------------------------------------------------------------------------------------
class TagSet:
    """The server's public tag set: sorted 16-byte tags ``F_k(y)`` of its distinct IDs.

    This is what the client downloads once and may cache (:meth:`save`, :meth:`load`) and
    reuse in later sessions with the same server key, named by ``(key_id, digest)``.

    Parameters
    ----------
    key_id : bytes
        16-byte id of the OPRF key the tags were computed with.
    salt : bytes
        32-byte hash-to-group salt of that key.
    tags : numpy.ndarray
        1-D ``S16`` array, strictly ascending (sorted, no repeats). Kept read-only.

    Raises
    ------
    DataError
        If the tags are not a strictly ascending 1-D ``S16`` array or the ids have the wrong
        size.

    Security
    --------
    Tags are outputs of a pseudorandom function under a key the client never sees, so the set
    reveals the server's number of distinct IDs and nothing else about them. A client that
    learned ``F_k(x)`` for some ``x`` (by querying it) can however test ``x`` against every
    later tag set under the same key, without asking again: rotate the key when the server's
    set changes if that matters.
    """

    def __init__(self, key_id: bytes, salt: bytes, tags: np.ndarray) -> None:
        if len(key_id) != KEY_ID_BYTES or len(salt) != SALT_BYTES:
            raise DataError(f"key id must be {KEY_ID_BYTES} bytes and salt {SALT_BYTES} bytes")
        tags = np.asarray(tags)
        if tags.ndim != 1 or tags.dtype != TAG_DTYPE:
            raise DataError(f"tags must be a 1-D {TAG_DTYPE} array, got {tags.dtype} {tags.shape}")
        if tags.size > MAX_ITEMS:
            raise DataError(f"at most {MAX_ITEMS} tags are supported")
        if not strictly_ascending(tags):
            raise DataError("tags must be sorted ascending without repeats")
        tags = tags.copy() if tags.flags.writeable else tags
        tags.flags.writeable = False
        self._key_id = bytes(key_id)
        self._salt = bytes(salt)
        self._tags = tags
        self._digest = tags_digest(self._key_id, self._salt, tags)

    @property
    def key_id(self) -> bytes:
        """16-byte id of the OPRF key."""
        return self._key_id

    @property
    def salt(self) -> bytes:
        """32-byte hash-to-group salt."""
        return self._salt

    @property
    def tags(self) -> np.ndarray:
        """The sorted tags (read-only ``S16`` array)."""
        return self._tags

    @property
    def digest(self) -> bytes:
        """32-byte digest of key id, salt and tags: names this exact set."""
        return self._digest

    def __len__(self) -> int:
        return int(self._tags.size)

    def __repr__(self) -> str:
        return f"TagSet(key_id={self._key_id.hex()}, n_tags={len(self)})"

    def positions(self, tags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Index of each query tag in :attr:`tags` and whether it is there."""
        query = np.asarray(tags, dtype=TAG_DTYPE)
        where = np.searchsorted(self._tags, query)
        if self._tags.size == 0:
            return where, np.zeros(query.shape, dtype=bool)
        found = self._tags[np.minimum(where, self._tags.size - 1)] == query
        return where, found & (where < self._tags.size)

    def save(self, path: PathLike) -> None:
        """Write the tag set (mode 0600, atomically, replacing any file there)."""
        payload = _pack_set(self._key_id, self._salt, self._tags)
        _write_private(path, _pack_file(_TAG_SET_MAGIC, payload), overwrite=True, what="tag set")

    @classmethod
    def load(cls, path: PathLike) -> TagSet:
        """Read a tag set written by :meth:`save`.

        Raises
        ------
        ParameterError
            If there is no such file.
        DataError
            If the file is not a tag set, has another version, is truncated or corrupted.
        """
        payload = _unpack_file(_read(path, "tag set"), _TAG_SET_MAGIC, "tag set file")
        key_id, salt, blob, _ = _unpack_set(payload, "tag set file", 0)
        return cls(key_id, salt, tags_array(blob))


class ServerTagTable:
    """The server's precomputed table: its :class:`TagSet` and the row of each tag.

    Build it once with :meth:`precompute` (the expensive part: one hash to the group and one
    scalar multiplication per server ID), keep it with :meth:`save` and reuse it for every
    client session under the same :class:`OprfKey`.

    Parameters
    ----------
    tag_set : TagSet
        The sorted tags.
    rows : numpy.ndarray
        ``rows[i]`` is the server's input row of the ID whose tag is ``tag_set.tags[i]``.

    Raises
    ------
    DataError
        If ``rows`` is not a 1-D array of non-negative integers of the tag set's length.

    Security
    --------
    Holds no secret key, but the rows are the server's own: the table stays with the server
    (clients get only :attr:`tag_set`, over the wire). Files are written with mode 0600.
    """

    def __init__(self, tag_set: TagSet, rows: np.ndarray) -> None:
        rows = np.asarray(rows)
        if rows.ndim != 1 or rows.size != len(tag_set) or rows.dtype.kind not in "iu":
            raise DataError("rows must be a 1-D integer array with one row per tag")
        if rows.size and int(rows.min()) < 0:
            raise DataError("rows must be non-negative")
        self._tag_set = tag_set
        self._rows = rows.astype(np.int64)
        self._rows.flags.writeable = False

    @classmethod
    def precompute(
        cls,
        ids: Sequence[str],
        key: OprfKey,
        *,
        n_jobs: int | None = None,
        chunk_items: int = DEFAULT_CHUNK_ITEMS,
    ) -> ServerTagTable:
        """Compute the tags ``F_k(y)`` of the server's distinct IDs, in parallel.

        Parameters
        ----------
        ids : sequence of str
            The server's IDs; duplicates count once (first row).
        key : OprfKey
            The server's OPRF key.
        n_jobs : int, optional
            Worker processes (default: every CPU this process may use). With 1, or a single
            chunk of IDs, everything runs in this process.
        chunk_items : int, default 4096
            IDs per task.

        Returns
        -------
        ServerTagTable

        Raises
        ------
        ParameterError
            If ``n_jobs`` or ``chunk_items`` is not a positive int, ``ids`` is a single string,
            or there are more than ``2^32 - 1`` distinct IDs.
        DataError
            If an ID is not a ``str`` or not encodable as UTF-8.

        Security
        --------
        Workers get the key scalar as bytes through a local pipe, draw no randomness and return
        only tags. They use the platform's default start method: with ``fork`` (Linux, Python
        before 3.14) they are copies of this process; with ``spawn`` or ``forkserver`` a script
        must guard its entry point with ``if __name__ == "__main__":``, as for any process
        pool. Nothing leaves the machine.

        Examples
        --------
        >>> from psi._unbalanced_oprf import OprfKey, ServerTagTable
        >>> table = ServerTagTable.precompute(["a", "b", "a"], OprfKey.generate(), n_jobs=1)
        >>> len(table.tag_set), sorted(table.rows.tolist())
        (2, [0, 1])
        """
        for name, value in (("n_jobs", n_jobs), ("chunk_items", chunk_items)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ParameterError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(key, OprfKey):
            raise ParameterError(f"key must be an OprfKey, got {type(key).__name__}")
        unique, first_rows = dedupe(ids)
        if len(unique) > MAX_ITEMS:
            raise ParameterError(f"at most {MAX_ITEMS} distinct IDs are supported")
        encoded = encode_ids(unique)
        jobs = [
            (key._scalar, key.salt, encoded[start : start + chunk_items])
            for start in range(0, len(encoded), chunk_items)
        ]
        workers = min(n_jobs or _available_cpus(), len(jobs))
        if workers <= 1:
            blobs = [_tags_worker(job) for job in jobs]
        else:
            with concurrent.futures.ProcessPoolExecutor(workers) as pool:
                blobs = list(pool.map(_tags_worker, jobs))
        tags = tags_array(b"".join(blobs))
        order = np.argsort(tags, kind="stable")
        sorted_tags = tags[order]
        if not strictly_ascending(sorted_tags):  # pragma: no cover - probability ~ n^2 / 2^129
            raise DataError("two distinct IDs have the same tag; generate a new key")
        rows = np.asarray(first_rows, dtype=np.int64)[order]
        return cls(TagSet(key.key_id, key.salt, sorted_tags), rows)

    @property
    def tag_set(self) -> TagSet:
        """The public part (what clients download)."""
        return self._tag_set

    @property
    def rows(self) -> np.ndarray:
        """Server row of each tag, aligned with ``tag_set.tags`` (read-only)."""
        return self._rows

    @property
    def key_id(self) -> bytes:
        """Id of the OPRF key the table was computed with."""
        return self._tag_set.key_id

    def __len__(self) -> int:
        return len(self._tag_set)

    def __repr__(self) -> str:
        return f"ServerTagTable(key_id={self.key_id.hex()}, n_tags={len(self)})"

    def save(self, path: PathLike) -> None:
        """Write the table (mode 0600, atomically, replacing any file there)."""
        tag_set = self._tag_set
        payload = _pack_set(tag_set.key_id, tag_set.salt, tag_set.tags)
        payload += self._rows.astype(">u8").tobytes()
        _write_private(path, _pack_file(_TABLE_MAGIC, payload), overwrite=True, what="table")

    @classmethod
    def load(cls, path: PathLike) -> ServerTagTable:
        """Read a table written by :meth:`save`.

        Raises
        ------
        ParameterError
            If there is no such file.
        DataError
            If the file is not a table, has another version, is truncated or corrupted.
        """
        payload = _unpack_file(_read(path, "table"), _TABLE_MAGIC, "table file")
        key_id, salt, blob, row_blob = _unpack_set(payload, "table file", 8)
        rows = np.frombuffer(row_blob, dtype=">u8")
        if rows.size and int(rows.max()) >= 1 << 63:
            raise DataError("table file: a row index is out of range")
        return cls(TagSet(key_id, salt, tags_array(blob)), rows.astype(np.int64))


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1
