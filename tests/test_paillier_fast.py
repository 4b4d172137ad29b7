"""The fast paths of the Paillier backend: randomness store and pool, packing, multi-exponentiation.

Keys are small (inside the test-only switch) and most work runs in this process (``n_jobs=1`` or
work below the parallel threshold); the tests that need worker processes use two of them on a
few small tasks.
"""

from __future__ import annotations

import os
import pickle
import time

import gmpy2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from phe import paillier as phe_paillier

from protocols import _paillier_pool as pool
from protocols._multiexp import (
    batch_invert,
    column_units,
    multi_exp,
    signed_column_products,
)
from protocols.errors import (
    DecryptionError,
    LocalProtocolError,
    ParameterError,
    RemoteProtocolError,
)
from protocols.paillier import (
    INPUT_BITS,
    MASK_HIDING_BITS,
    VALUE_SCALE_BITS,
    PaillierBackend,
    PaillierPublicKey,
    PaillierSecretKey,
    parallelism,
)
from protocols.testing import insecure_keys_allowed

PROPERTY = settings(max_examples=25, deadline=None)


@pytest.fixture(scope="module")
def sk() -> PaillierSecretKey:
    with insecure_keys_allowed():
        return PaillierBackend().generate_secret_key(512)


@pytest.fixture(scope="module")
def pk(sk: PaillierSecretKey) -> PaillierPublicKey:
    return sk.public_key


@pytest.fixture
def one_job():
    with parallelism(1):
        yield


@pytest.fixture
def two_jobs():
    with parallelism(2):
        yield
    pool.shutdown()


def close(got: np.ndarray, expected: object) -> None:
    np.testing.assert_allclose(got, np.asarray(expected, dtype=np.float64), rtol=0, atol=1e-6)


# == randomness: workers draw from the OS, every value is used once ===========================
def _worker_draw(key: tuple[bytes, bytes], count: int) -> tuple[int, bytes]:
    time.sleep(0.3)  # hold the worker so that the next task goes to the other one
    return os.getpid(), pool._task_randomness(key, count)


def test_two_workers_and_two_refills_never_repeat_randomness(two_jobs, pk) -> None:
    executor = pool._executor()
    assert executor is not None
    width = pk.key_bits // 4
    seen: list[int] = []
    pids = set()
    for _refill in range(2):
        futures = [executor.submit(_worker_draw, pk._context.key_blob, 40) for _ in range(2)]
        for future in futures:
            pid, blob = future.result()
            pids.add(pid)
            seen += [int(v) for v in pool._from_blob(blob, width)]
    assert len(pids) == 2  # two distinct worker processes contributed
    assert len(seen) == 160 and len(set(seen)) == 160
    # each is h_s^a for some a: an encryption of zero, so a valid randomness factor
    assert all(gmpy2.gcd(v, pk.n) == 1 for v in seen)


def test_precomputed_randomness_is_consumed_once(two_jobs, sk, pk) -> None:
    pk.precompute_randomness(50)
    assert pk.randomness_available >= 50
    before = pk.randomness_available
    x = np.linspace(-3, 3, 30)
    c = pk.encrypt(x)
    assert pk.randomness_available == before - 30
    close(sk.decrypt(c), x)
    c2 = pk.encrypt(x)
    # stored values, then inline ones: never a repeated ciphertext
    values = [int(v) for v in c.values + c2.values]
    assert len(set(values)) == 60
    close(sk.decrypt(c2), x)


def test_background_refill_keeps_a_reserve(two_jobs) -> None:
    with insecure_keys_allowed():
        sk = PaillierBackend().generate_secret_key(512)
    pk = sk.public_key
    first = pk.encrypt(np.zeros(1200))  # big enough for the pool: workers refill behind it
    deadline = time.monotonic() + 30
    while pk.randomness_available < 1200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pk.randomness_available >= 1200
    second = pk.encrypt(np.ones(1200))  # from the store
    assert len({int(v) for v in first.values + second.values}) == 2400
    close(sk.decrypt(second), np.ones(1200))
    pk.precompute_randomness(10)  # explicit precomputation turns the automatic refill off
    level = pk.randomness_available
    pk.encrypt(np.ones(level))
    time.sleep(0.3)
    assert pk.randomness_available == 0


def test_store_is_shared_by_equal_keys(one_job, pk) -> None:
    with insecure_keys_allowed():
        twin = PaillierPublicKey.from_bytes(pk.to_bytes())
    start = pk.randomness_available
    twin.precompute_randomness(5)
    assert pk.randomness_available == start + 5
    pk.encrypt(np.zeros(start + 5))
    assert twin.randomness_available == 0


def test_precompute_randomness_rejects_bad_counts(pk) -> None:
    for bad in (-1, 1.5, "3", True):
        with pytest.raises(ParameterError):
            pk.precompute_randomness(bad)  # type: ignore[arg-type]


def test_n_jobs_must_be_positive() -> None:
    for bad in (0, -2, 1.0, "2", True):
        with pytest.raises(ParameterError), parallelism(bad):  # type: ignore[arg-type]
            pass
    with parallelism(1):
        assert pool.get_n_jobs() == 1 and pool._executor() is None
    with parallelism(None):
        assert pool.get_n_jobs() == (os.cpu_count() or 1)


def test_parallel_column_products_equal_in_process(two_jobs, pk) -> None:
    rng = np.random.default_rng(1)
    bases = [gmpy2.mpz(int(v)) for v in pk.encrypt(rng.normal(size=300)).values]
    exponents = np.rint(np.ldexp(rng.normal(size=(300, 5)), 32)).astype(np.int64)
    exponents[:, 1] = np.rint(np.ldexp(rng.integers(-3, 4, size=300), 32))  # few values
    expected = signed_column_products(bases, exponents, pk.nsquare)
    # claim a large key so that the work goes to the pool: by columns, then by rows
    assert pool.column_products(bases, exponents, pk.nsquare, 8192) == expected
    one = exponents[:, :1]
    assert pool.column_products(bases, one, pk.nsquare, 8192) == expected[:1]


def test_parallel_randomness_decrypts(two_jobs, sk, pk) -> None:
    ctx = pk._context
    values = ctx._compute(64, lambda k: os.urandom(k))  # over the pool (two jobs)
    assert len(set(int(v) for v in values)) == 64
    # h_s^a encrypts zero: (1 + m n) * r decrypts to m
    n2 = pk.nsquare
    for m, r in zip(range(5), values):
        assert sk._raw_decrypt((1 + m * pk.n) * r % n2) == m


def test_fixed_base_tables_agree_with_powmod(pk) -> None:
    rng = np.random.default_rng(3)
    raw = rng.integers(0, 256, size=5 * pk._exponent_bytes, dtype=np.uint8).tobytes()
    exponents = [
        int.from_bytes(raw[i * pk._exponent_bytes : (i + 1) * pk._exponent_bytes], "little")
        for i in range(5)
    ]
    bits = pk._exponent_bytes * 8
    for window in (8, 11, 12, 13):
        table = pool._Table(pk.hs, pk.nsquare, bits, window)
        got = table.powers(table.digits(raw, 5, pk._exponent_bytes), pk.nsquare)
        assert [int(v) for v in got] == [int(gmpy2.powmod(pk.hs, a, pk.nsquare)) for a in exponents]


def test_table_widens_only_once_it_has_paid(one_job) -> None:
    with insecure_keys_allowed():
        key = PaillierBackend().generate_secret_key(256).public_key
    ctx = key._context
    ctx.make(10, os.urandom)
    assert ctx.windows() == 16  # 128-bit exponents in 8-bit windows
    ctx.make(20_000, os.urandom)  # enough to pay for a wider table
    ctx.make(1, os.urandom)
    assert ctx.windows() < 16


# == interoperability with phe ===============================================================
def test_phe_decrypts_our_ciphertexts(sk, pk) -> None:
    phe_pk, phe_sk = pk.to_phe(), sk.to_phe()
    x = np.array([1.5, -2.25, 0.0, 1e-3, -12345.678])
    c = pk.encrypt(x)
    # base 16, exponent -8: phe's EncryptedNumber at our fixed scale 2^-32
    got = [phe_sk.decrypt(phe_paillier.EncryptedNumber(phe_pk, int(v), -8)) for v in c.values]
    close(got, x)
    matrix = np.array([[1.0, -2.0], [0.5, 3.0], [-1.0, 0.25], [2.0, 1.0], [0.0, -1.5]])
    dot = pk.dot_columns(matrix, c)
    got = [phe_sk.decrypt(phe_paillier.EncryptedNumber(phe_pk, int(v), -16)) for v in dot.values]
    close(got, matrix.T @ x)


def test_phe_ciphertexts_work_with_our_arithmetic(sk, pk) -> None:
    phe_pk = pk.to_phe()
    values = [2.5, -1.0, 7.0]
    raw = [phe_pk.raw_encrypt(round(v * 2**32) % int(pk.n)) for v in values]
    header = pk.ciphertext_to_bytes(pk.encrypt([0.0, 0.0, 0.0]))[: -3 * pk.key_bits // 4]
    data = header + b"".join(v.to_bytes(pk.key_bits // 4, "big") for v in raw)
    theirs = pk.ciphertext_from_bytes(data, depth=0)
    close(sk.decrypt(pk.add(theirs, pk.encrypt([1.0, 1.0, 1.0]))), [3.5, 0.0, 8.0])


# == range: overflow raises, never wraps ======================================================
def test_encrypt_range_is_public_and_enforced(pk) -> None:
    pk.encrypt([2.0**INPUT_BITS - 1.0, -(2.0**INPUT_BITS) + 1.0])
    for bad in (2.0**INPUT_BITS, -(2.0**INPUT_BITS), 1e300):
        with pytest.raises(ParameterError):
            pk.encrypt([0.0, bad])


def test_repeated_doubling_ends_in_an_error_not_a_wrong_value(sk, pk) -> None:
    c = pk.encrypt([2.0**31, -3.0])
    expected = np.array([2.0**31, -3.0])
    with pytest.raises(DecryptionError):
        for _ in range(pk.key_bits):
            c = pk.add(c, c)
            expected = expected * 2
            close(sk.decrypt(c), expected)


# == packing of masked vectors ================================================================
def test_mask_packs_gradients_and_keeps_the_logical_size(sk, pk) -> None:
    x = np.linspace(-5, 5, 12)
    matrix = np.random.default_rng(0).normal(size=(12, 9))
    grad = pk.dot_columns(matrix, pk.encrypt(x))
    masked, mask = pk.mask(grad)
    assert masked.size == 9 and len(masked.values) < 9
    data = pk.ciphertext_to_bytes(masked)
    back = pk.ciphertext_from_bytes(data, depth=1)
    assert back.size == 9 and back.slot_bits == masked.slot_bits
    close(pk.unmask(sk.decrypt_masked(back), mask), matrix.T @ x)
    with pytest.raises(RemoteProtocolError):
        pk.ciphertext_from_bytes(data, depth=0)  # scale pinned as for unpacked vectors


def test_packed_slots_hold_value_offset_and_mask(sk, pk) -> None:
    x = np.array([1.0, -2.0, 3.5, -0.25])
    c = pk.encrypt(x)
    masked, mask = pk.mask(c)
    slot = masked.slot_bits
    bound = c.bound_bits
    assert slot == bound + 2 + MASK_HIDING_BITS
    per = (pk.key_bits - 1) // slot
    assert len(masked.values) == -(-4 // per)
    for g, ct in enumerate(masked.values):
        plain = sk._raw_decrypt(ct)
        assert plain < int(pk.n)
        for j in range(g * per, min(4, (g + 1) * per)):
            content = plain >> (slot * (j - g * per)) & ((1 << slot) - 1)
            value = round(x[j] * 2**VALUE_SCALE_BITS)
            assert content == value + (1 << bound) + mask.values[j]
            assert 0 <= mask.values[j] < 2 ** (slot - 1)


def test_masks_do_not_pack_when_it_saves_nothing(sk, pk) -> None:
    masked, mask = pk.mask(pk.encrypt([4.0]))
    assert not masked.packed and mask.slot_bits == 0
    received = pk.ciphertext_from_bytes(pk.ciphertext_to_bytes(pk.encrypt([1.0, 2.0])))
    product = pk.mul_plain(pk.mul_plain(received, [1.0, 1.0]), [1.0, 1.0])
    unknown = pk.ciphertext_from_bytes(pk.ciphertext_to_bytes(product))
    assert unknown.bound_bits is None  # no public bound at this scale: uniform masks
    masked, _ = pk.mask(unknown)
    assert not masked.packed


def test_packed_vectors_only_decrypt_masked(sk, pk) -> None:
    masked, _ = pk.mask(pk.encrypt([1.0, 2.0, 3.0]))
    assert masked.packed
    for operation in (
        lambda: pk.add(masked, masked),
        lambda: pk.add_plain(masked, [1.0, 1.0, 1.0]),
        lambda: pk.mul_plain(masked, [1.0, 1.0, 1.0]),
        lambda: pk.sum(masked),
        lambda: pk.dot_columns(np.ones((3, 1)), masked),
        lambda: pk.rerandomize(masked),
        lambda: pk.mask(masked),
    ):
        with pytest.raises(LocalProtocolError):
            operation()
    with pytest.raises(DecryptionError):
        sk.decrypt(masked)


def test_tampered_packed_payload_is_rejected(sk, pk) -> None:
    masked, mask = pk.mask(pk.encrypt([1.0, 2.0, 3.0]))
    payload = bytearray(sk.decrypt_masked(masked))
    payload[-1] ^= 0x01  # the lowest slot now differs by one: still in range, accepted
    pk.unmask(bytes(payload), mask)
    width = pk.key_bits // 8
    plain = int.from_bytes(sk.decrypt_masked(masked)[-width:], "big")
    header = sk.decrypt_masked(masked)[:-width]
    for bit in (masked.slot_bits - 1, 3 * masked.slot_bits + 5):  # a slot's top bit, above slots
        forged = header + (plain ^ (1 << bit)).to_bytes(width, "big")
        with pytest.raises(RemoteProtocolError):
            pk.unmask(forged, mask)
    unpacked_mask = pk.mask(pk.encrypt([1.0]))[1]
    with pytest.raises(RemoteProtocolError):
        pk.unmask(sk.decrypt_masked(masked), unpacked_mask)


def test_packed_header_checks(pk) -> None:
    masked, _ = pk.mask(pk.encrypt([1.0, 2.0, 3.0]))
    data = pk.ciphertext_to_bytes(masked)
    bad_slots = data[:9] + (1).to_bytes(2, "big") + data[11:]  # slots too narrow to hide
    too_few = data[:5] + (1).to_bytes(4, "big") + data[9:]  # one value: nothing was packed
    for bad in (data[:-1], data + b"\x00", bad_slots, too_few, b"PP\x02" + data[3:]):
        with pytest.raises(RemoteProtocolError):
            pk.ciphertext_from_bytes(bad)


def test_public_key_pickles_without_its_store(pk) -> None:
    with insecure_keys_allowed():
        back = pickle.loads(pickle.dumps(pk))
    assert back == pk and back.to_bytes() == pk.to_bytes()


# == multi-exponentiation ======================================================================
MODULUS = gmpy2.next_prime(gmpy2.mpz(2) ** 255) * gmpy2.next_prime(gmpy2.mpz(2) ** 250 + 7)


@st.composite
def signed_cases(draw: st.DrawFn) -> tuple[list[int], np.ndarray]:
    m = draw(st.integers(1, 40))
    p = draw(st.integers(1, 4))
    bases = draw(st.lists(st.integers(2, int(MODULUS) - 1), min_size=m, max_size=m))
    entry = st.one_of(
        st.sampled_from([0, 1, -1, 2**32, -(2**32), 3 * 2**31]),
        st.integers(-(2**61), 2**61),
        st.integers(-300, 300),
    )
    cells = draw(st.lists(entry, min_size=m * p, max_size=m * p))
    return bases, np.array(cells, dtype=np.int64).reshape(m, p)


@PROPERTY
@given(case=signed_cases())
def test_signed_column_products_match_powmod(case: tuple[list[int], np.ndarray]) -> None:
    bases, exponents = case
    mod = int(MODULUS)
    if any(gmpy2.gcd(b, mod) != 1 for b in bases):
        return
    got = signed_column_products([gmpy2.mpz(b) for b in bases], exponents, MODULUS)
    for j, value in enumerate(got):
        expected = 1
        for b, e in zip(bases, exponents[:, j].tolist()):
            expected = expected * pow(b, e, mod) % mod
        assert int(value) == expected


def test_signed_column_products_on_protocol_shapes() -> None:
    rng = np.random.default_rng(5)
    m = 400
    bases = [gmpy2.mpz(int(v)) for v in rng.integers(2, 2**62, size=m)]
    columns = [
        rng.normal(size=m),  # continuous: signed digits
        rng.integers(-2, 9, size=m) / 3.0,  # categorical: buckets by value ...
        rng.integers(0, 2, size=m) - 0.5,  # ... and, with the next two, by joint pattern
        rng.integers(-1, 2, size=m) * 1.25,
        np.ones(m),  # the intercept
        np.where(rng.random(m) < 0.5, 0.0, rng.normal(size=m)),  # sparse
        np.zeros(m),
    ]
    exponents = np.rint(np.ldexp(np.column_stack(columns), 32)).astype(np.int64)
    shared = [cols for cols, _ in column_units(exponents) if len(cols) > 1]
    assert shared and {2, 3} <= set(shared[0])  # the categorical columns share one fill
    got = signed_column_products(bases, exponents, MODULUS)
    mod = int(MODULUS)
    for j in range(exponents.shape[1]):
        expected = 1
        for b, e in zip(bases, exponents[:, j].tolist()):
            expected = expected * pow(int(b), e, mod) % mod
        assert int(got[j]) == expected


def test_signed_column_products_rejects_bad_input() -> None:
    bases = [gmpy2.mpz(3), gmpy2.mpz(5)]
    with pytest.raises(ValueError):
        signed_column_products(bases, np.ones((3, 1), dtype=np.int64), MODULUS)
    with pytest.raises(ValueError):
        signed_column_products(bases, np.array([[2**62], [1]], dtype=np.int64), MODULUS)


def test_batch_invert() -> None:
    values = [gmpy2.mpz(v) for v in (3, 5, 7, int(MODULUS) - 1, 2**200 + 1)]
    inverses = batch_invert(values, MODULUS)
    assert all(v * w % MODULUS == 1 for v, w in zip(values, inverses))
    assert batch_invert([], MODULUS) == []
    with pytest.raises(ZeroDivisionError):
        batch_invert([gmpy2.mpz(3), MODULUS], MODULUS)


def test_multi_exp_strategies_agree() -> None:
    rng = np.random.default_rng(9)
    mod = int(MODULUS)
    bases = [gmpy2.mpz(int(v)) for v in rng.integers(2, 2**62, size=300)]
    for exponents in (
        rng.integers(0, 2**40, size=300),  # digits
        rng.integers(0, 4, size=300) * 2**33,  # few distinct values
        np.full(300, 2**32),  # one value
        np.concatenate([np.zeros(297), [5, 2**50, 3]]).astype(np.int64),  # a few terms
    ):
        expected = 1
        for b, e in zip(bases, exponents.tolist()):
            expected = expected * pow(int(b), int(e), mod) % mod
        assert int(multi_exp(bases, exponents, MODULUS)) == expected


# == the estimator's n_jobs ====================================================================
def test_estimator_sets_n_jobs_for_its_session(monkeypatch) -> None:
    import pandas as pd

    import protocols.paillier as paillier_module
    from tests.reference import make_blocks
    from vfl import VerticalLogisticRegression

    blocks, y = make_blocks(200, {"bank": 2, "retailer": 2}, seed=4)
    frames = {k: pd.DataFrame(v).add_prefix(f"{k}_") for k, v in blocks.items()}
    seen: list[int] = []
    original = paillier_module.column_products

    def spy(*args, **kwargs):
        seen.append(pool.get_n_jobs())
        return original(*args, **kwargs)

    monkeypatch.setattr(paillier_module, "column_products", spy)
    params = dict(key_bits=512, max_iter=1, batch_size=50, random_state=0)
    assert VerticalLogisticRegression().get_params()["n_jobs"] == 1  # plain scripts work
    with insecure_keys_allowed():
        for bad in (0, -1, 2.5, True):
            with pytest.raises(ParameterError):
                VerticalLogisticRegression(n_jobs=bad, **params).fit(frames, y, "bank")
        model = VerticalLogisticRegression(n_jobs=1, **params).fit(frames, y, "bank")
    assert seen and set(seen) == {1}
    assert model.n_iter_ == 1
