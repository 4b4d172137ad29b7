"""Tests for the HE backends: one contract suite for every backend, then Paillier specifics.

* The contract suite runs once per entry of ``BACKEND_CASES`` (add CKKS there when it lands).
* Paillier specifics: key generation, strict decoding details, known-answer vectors against
  ``phe`` with tiny fixed keys and fixed randomness, and the multi-exponentiation.
"""

from __future__ import annotations

import contextlib
import copy
import pickle
import struct
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace

import gmpy2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from phe import paillier as phe_paillier

from protocols import paillier
from protocols._multiexp import multi_exp
from protocols.backend import Backend, CiphertextVector, PublicKey, SecretKey
from protocols.ckks import CKKSBackend
from protocols.errors import (
    DecryptionError,
    InsecureParametersError,
    LocalProtocolError,
    ParameterError,
    RemoteProtocolError,
)
from protocols.paillier import (
    PLAIN_SCALE_BITS,
    VALUE_SCALE_BITS,
    PaillierBackend,
    PaillierPublicKey,
    PaillierSecretKey,
)
from protocols.testing import insecure_keys_allowed


@dataclass(frozen=True)
class BackendCase:
    """One backend under test and the small (insecure) key size its tests use."""

    name: str
    make: Callable[[], Backend]
    test_key_bits: int


# Every contract test runs on each case. CKKS ignores key_bits (its ring follows the width).
BACKEND_CASES = [BackendCase("paillier", PaillierBackend, 512), BackendCase("ckks", CKKSBackend, 0)]
#: Widest gradient the contract tests compute (packed schemes lay out slots for it).
VECTOR_WIDTH = 8

PROPERTY = settings(max_examples=25, deadline=None)

# Magnitudes the protocol produces (scores, residuals, standardised features, gradients).
VALUES = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)
MULTIPLIERS = st.one_of(
    st.just(0.0),
    st.sampled_from([1.0, -1.0, 0.25, -0.25]),
    st.floats(-100, 100, allow_nan=False, allow_infinity=False),
)
FEATURES = st.one_of(
    st.sampled_from([0.0, 1.0, -1.0]), st.floats(-10, 10, allow_nan=False, allow_infinity=False)
)


def vectors(min_size: int = 0, max_size: int = 8) -> st.SearchStrategy[list[float]]:
    return st.lists(VALUES, min_size=min_size, max_size=max_size)


def vector_pairs(second: st.SearchStrategy[float] = VALUES) -> st.SearchStrategy:
    """Two lists of the same (random) length."""
    return st.integers(0, 8).flatmap(
        lambda k: st.tuples(
            st.lists(VALUES, min_size=k, max_size=k), st.lists(second, min_size=k, max_size=k)
        )
    )


# -- fixtures -------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=BACKEND_CASES, ids=lambda case: case.name)
def case(request: pytest.FixtureRequest) -> BackendCase:
    return request.param


@pytest.fixture(scope="module")
def backend(case: BackendCase) -> Backend:
    return case.make()


@pytest.fixture(scope="module")
def sk(case: BackendCase, backend: Backend) -> SecretKey:
    with insecure_keys_allowed():
        return backend.generate_secret_key(case.test_key_bits, vector_width=VECTOR_WIDTH)


@pytest.fixture(scope="module")
def other_sk(case: BackendCase, backend: Backend) -> SecretKey:
    with insecure_keys_allowed():
        return backend.generate_secret_key(case.test_key_bits, vector_width=VECTOR_WIDTH)


@pytest.fixture(scope="module")
def pk(sk: SecretKey) -> PublicKey:
    return sk.public_key


def close(got: np.ndarray, expected: object, pk: PublicKey) -> None:
    got = np.asarray(got)
    expected = np.asarray(expected, dtype=np.float64)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=pk.tolerance)


# == contract suite: homomorphic operations ===================================================
@PROPERTY
@given(x=vectors())
def test_encrypt_decrypt_round_trip(sk: SecretKey, pk: PublicKey, x: list[float]) -> None:
    c = pk.encrypt(x)
    assert isinstance(c, CiphertextVector)
    assert c.size == len(c) == len(x)
    close(sk.decrypt(c), x, pk)


@PROPERTY
@given(pair=vector_pairs())
def test_add(sk: SecretKey, pk: PublicKey, pair: tuple[list[float], list[float]]) -> None:
    x, y = pair
    close(sk.decrypt(pk.add(pk.encrypt(x), pk.encrypt(y))), np.add(x, y), pk)


@PROPERTY
@given(pair=vector_pairs())
def test_add_plain(sk: SecretKey, pk: PublicKey, pair: tuple[list[float], list[float]]) -> None:
    x, y = pair
    close(sk.decrypt(pk.add_plain(pk.encrypt(x), y)), np.add(x, y), pk)


@PROPERTY
@given(pair=vector_pairs(MULTIPLIERS))
def test_mul_plain(sk: SecretKey, pk: PublicKey, pair: tuple[list[float], list[float]]) -> None:
    x, k = pair
    close(sk.decrypt(pk.mul_plain(pk.encrypt(x), k)), np.multiply(x, k), pk)


def test_mul_plain_by_zero_negative_and_one(sk: SecretKey, pk: PublicKey) -> None:
    x = [3.5, -2.25, 0.0, 7.0]
    close(sk.decrypt(pk.mul_plain(pk.encrypt(x), [0.0, -1.0, -3.0, 1.0])), [0, 2.25, 0, 7], pk)


@PROPERTY
@given(x=vectors())
def test_sum(sk: SecretKey, pk: PublicKey, x: list[float]) -> None:
    total = pk.sum(pk.encrypt(x))
    assert total.size == 1
    close(sk.decrypt(pk.prepare_decryption(total)), [np.sum(x)], pk)


@st.composite
def matrix_and_vector(draw: st.DrawFn) -> tuple[np.ndarray, list[float]]:
    m = draw(st.integers(1, 12))
    p = draw(st.integers(1, 4))
    matrix = draw(hnp.arrays(np.float64, (m, p), elements=FEATURES))
    v = draw(st.lists(st.floats(-10, 10, allow_nan=False), min_size=m, max_size=m))
    return matrix, v


@PROPERTY
@given(data=matrix_and_vector())
def test_dot_columns_matches_numpy(
    sk: SecretKey, pk: PublicKey, data: tuple[np.ndarray, list[float]]
) -> None:
    matrix, v = data
    got = pk.dot_columns(matrix, pk.encrypt(v))
    assert got.size == matrix.shape[1]
    close(sk.decrypt(pk.prepare_decryption(got)), matrix.T @ np.asarray(v), pk)


@PROPERTY
@given(data=st.lists(matrix_and_vector(), min_size=1, max_size=3), scalars=vectors(1, 3))
def test_sum_of_products_and_scalars_matches_numpy(
    sk: SecretKey, pk: PublicKey, data: list[tuple[np.ndarray, list[float]]], scalars: list[float]
) -> None:
    # The loss's shape: products of batches of different sizes summed, fresh scalars added,
    # prepared once, sent, decrypted.
    width = min(matrix.shape[1] for matrix, _ in data)
    total = None
    expected = np.zeros(1)
    for matrix, v in data:
        column = matrix[:, :1]
        product = pk.dot_columns(column, pk.encrypt(v))
        total = product if total is None else pk.add(total, product)
        expected += column.T @ np.asarray(v)
    assert total is not None and width >= 1
    for value in scalars:
        total = pk.add(total, pk.encrypt([value]))
        expected += value
    prepared = pk.prepare_decryption(total)
    received = pk.ciphertext_from_bytes(pk.ciphertext_to_bytes(prepared), depth=1)
    close(sk.decrypt(received), expected, pk)


@PROPERTY
@given(x=vectors(min_size=1))
def test_rerandomize_keeps_plaintext_changes_bytes(
    sk: SecretKey, pk: PublicKey, x: list[float]
) -> None:
    c = pk.encrypt(x)
    fresh = pk.rerandomize(c)
    close(sk.decrypt(fresh), sk.decrypt(c), pk)
    assert pk.ciphertext_to_bytes(fresh) != pk.ciphertext_to_bytes(c)


@PROPERTY
@given(x=vectors())
def test_mask_decrypt_masked_unmask_round_trip(
    sk: SecretKey, pk: PublicKey, x: list[float]
) -> None:
    masked, mask = pk.mask(pk.encrypt(x))
    payload = sk.decrypt_masked(masked)
    assert isinstance(payload, bytes)
    close(pk.unmask(payload, mask), x, pk)


@PROPERTY
@given(data=matrix_and_vector())
def test_protocol_gradient_step(
    sk: SecretKey, pk: PublicKey, data: tuple[np.ndarray, list[float]]
) -> None:
    # The shape of one mini-batch as vfl.roles runs it: [[4d]] = [[u]] + Enc(term) (one fresh
    # encryption, no plaintext product), X^T [[4d]], mask, decrypt at the coordinator, unmask.
    matrix, u = data
    m = len(u)
    term = np.linspace(-2.0, 2.0, m)
    residual = pk.add(pk.encrypt(u), pk.encrypt(term))
    grad = pk.dot_columns(matrix, residual)
    masked, mask = pk.mask(grad)
    at_coordinator = pk.ciphertext_from_bytes(pk.ciphertext_to_bytes(masked), depth=1)
    got = pk.unmask(sk.decrypt_masked(at_coordinator), mask)
    close(got, matrix.T @ (np.asarray(u) + term), pk)


# == contract suite: serialisation ===========================================================
@PROPERTY
@given(x=vectors(), k=MULTIPLIERS)
def test_ciphertext_serialisation_round_trip(
    sk: SecretKey, pk: PublicKey, x: list[float], k: float
) -> None:
    for c in (pk.encrypt(x), pk.mul_plain(pk.encrypt(x), [k] * len(x))):
        data = pk.ciphertext_to_bytes(c)
        assert isinstance(data, bytes)
        back = pk.ciphertext_from_bytes(data)
        assert back.size == c.size
        assert pk.ciphertext_to_bytes(back) == data
        close(sk.decrypt(back), sk.decrypt(c), pk)


def test_public_key_serialisation_round_trip(
    backend: Backend, sk: SecretKey, pk: PublicKey
) -> None:
    data = pk.to_bytes()
    with insecure_keys_allowed():
        back = backend.public_key_from_bytes(data)
    assert back.to_bytes() == data
    assert back.key_bits == pk.key_bits
    # Encryptions under the decoded key are decryptable by the original secret key.
    c = pk.ciphertext_from_bytes(back.ciphertext_to_bytes(back.encrypt([1.5, -2.0])))
    close(sk.decrypt(c), [1.5, -2.0], pk)


# == contract suite: range and finiteness ====================================================
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_raise_parameter_error(pk: PublicKey, bad: float) -> None:
    c = pk.encrypt([1.0, 2.0])
    with pytest.raises(ParameterError):
        pk.encrypt([1.0, bad])
    with pytest.raises(ParameterError):
        pk.add_plain(c, [bad, 1.0])
    with pytest.raises(ParameterError):
        pk.mul_plain(c, [bad, 1.0])
    with pytest.raises(ParameterError):
        pk.dot_columns(np.array([[1.0], [bad]]), c)


@pytest.mark.parametrize("huge", [1e300, -1e300, 1.7e308])
def test_values_too_large_to_encode_raise_parameter_error(pk: PublicKey, huge: float) -> None:
    c = pk.encrypt([1.0])
    with pytest.raises(ParameterError):
        pk.encrypt([huge])
    with pytest.raises(ParameterError):
        pk.add_plain(c, [huge])
    with pytest.raises(ParameterError):
        pk.mul_plain(c, [huge])
    with pytest.raises(ParameterError):
        pk.dot_columns(np.array([[huge]]), c)


def largest_encodable_power_of_two(pk: PublicKey) -> float:
    """The largest 2^k that ``encrypt`` accepts (found by doubling, so backend-neutral)."""
    value = 1.0
    while True:
        try:
            pk.encrypt([2 * value])
        except ParameterError:
            return value
        value *= 2


def _doubling_until_error(sk: SecretKey, pk: PublicKey, start: CiphertextVector, step) -> None:
    """Apply ``step`` (which doubles the plaintext) until the backend objects, either at the
    operation (ParameterError) or at decryption (DecryptionError); every result before must be
    exact, and an error must come."""
    expected = sk.decrypt(start)
    current = start
    for _ in range(4096):
        try:
            current = step(current)
            got = sk.decrypt(current)
        except (ParameterError, DecryptionError):
            return
        expected = expected * 2
        close(got, expected, pk)
    pytest.fail("no result ever left the backend's range")


def test_sums_out_of_range_raise_before_any_wrong_value(sk: SecretKey, pk: PublicKey) -> None:
    big = largest_encodable_power_of_two(pk)
    for start in ([big, 1.0], [-big, -1.0]):
        _doubling_until_error(sk, pk, pk.encrypt(start), lambda c: pk.add(c, c))
    c = pk.encrypt([big, 1.0])
    _doubling_until_error(
        sk,
        pk,
        c,
        lambda x: pk.add_plain(x, sk.decrypt(x)),  # x + its own value
    )


def test_scaling_out_of_range_raises_before_any_wrong_value(sk: SecretKey, pk: PublicKey) -> None:
    # Double the input until a product no longer fits: every result before that is exact.
    value = 1.0
    for _ in range(4096):
        try:
            product = pk.mul_plain(pk.encrypt([value]), [2.0])
            got = sk.decrypt(product)
        except (ParameterError, DecryptionError):
            break
        close(got, [2 * value], pk)
        value *= 2
    else:
        pytest.fail("no product ever left the encoding range")


# == contract suite: strict decoding and key checks ==========================================
def test_truncated_ciphertext_bytes_raise(pk: PublicKey) -> None:
    data = pk.ciphertext_to_bytes(pk.encrypt([1.0, -2.0]))
    for end in range(len(data)):
        with pytest.raises(RemoteProtocolError):
            pk.ciphertext_from_bytes(data[:end])
    with pytest.raises(RemoteProtocolError):
        pk.ciphertext_from_bytes(data + b"\x00")


def test_ciphertext_with_wrong_header_tag_raises(pk: PublicKey) -> None:
    data = pk.ciphertext_to_bytes(pk.encrypt([1.0]))
    for index in (0, 1):
        flipped = bytearray(data)
        flipped[index] ^= 0xFF
        with pytest.raises(RemoteProtocolError):
            pk.ciphertext_from_bytes(bytes(flipped))


def test_ciphertext_from_another_key_is_rejected(
    sk: SecretKey, other_sk: SecretKey, pk: PublicKey
) -> None:
    other = other_sk.public_key
    foreign = other.encrypt([1.0])
    with pytest.raises(RemoteProtocolError):
        pk.ciphertext_from_bytes(other.ciphertext_to_bytes(foreign))
    # In-process mix-ups are local bugs; decryption stays opaque.
    with pytest.raises(LocalProtocolError):
        pk.add(pk.encrypt([1.0]), foreign)
    with pytest.raises(LocalProtocolError):
        pk.mask(foreign)
    with pytest.raises(DecryptionError):
        sk.decrypt(foreign)
    with pytest.raises(DecryptionError):
        sk.decrypt_masked(foreign)


def test_size_mismatches_raise_local_protocol_error(pk: PublicKey) -> None:
    c = pk.encrypt([1.0, 2.0])
    with pytest.raises(LocalProtocolError):
        pk.add(c, pk.encrypt([1.0]))
    with pytest.raises(LocalProtocolError):
        pk.add_plain(c, [1.0, 2.0, 3.0])
    with pytest.raises(LocalProtocolError):
        pk.mul_plain(c, [1.0])
    with pytest.raises(LocalProtocolError):
        pk.dot_columns(np.ones((3, 2)), c)


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=300))
def test_garbage_never_escapes_the_error_tree(backend: Backend, pk: PublicKey, data: bytes) -> None:
    # Random bytes may, very rarely, form a well-shaped small key (InsecureParametersError);
    # anything else outside the error tree fails the test.
    for decode in (pk.ciphertext_from_bytes, backend.public_key_from_bytes):
        try:
            decode(data)
        except (RemoteProtocolError, InsecureParametersError):
            pass


def test_malformed_public_key_bytes_raise(backend: Backend, pk: PublicKey) -> None:
    data = pk.to_bytes()
    # every 7th cut of the first 4 KiB, then 64 spread over the rest (CKKS keys are ~11 MB)
    cuts = set(range(0, min(len(data), 4096), 7)) | set(
        np.linspace(0, len(data) - 1, 64, dtype=int)
    )
    malformed = [data[:end] for end in sorted(cuts)]
    malformed += [data[:-1], data + b"\x00", b"XX" + data[2:], bytes(len(data))]
    with insecure_keys_allowed():
        for bad in malformed:
            with pytest.raises(RemoteProtocolError):
                backend.public_key_from_bytes(bad)


def test_masked_payload_is_checked(sk: SecretKey, pk: PublicKey) -> None:
    masked, mask = pk.mask(pk.encrypt([1.0, 2.0]))
    payload = sk.decrypt_masked(masked)
    for end in range(0, len(payload), 5):
        with pytest.raises(RemoteProtocolError):
            pk.unmask(payload[:end], mask)
    with pytest.raises(RemoteProtocolError):
        pk.unmask(payload + b"\x00", mask)
    other_masked, _ = pk.mask(pk.encrypt([1.0]))
    with pytest.raises(RemoteProtocolError):
        pk.unmask(sk.decrypt_masked(other_masked), mask)  # count differs from the mask


# == contract suite: secrets stay put ===========================================================
@pytest.mark.parametrize("leak", [pickle.dumps, copy.copy, copy.deepcopy], ids=lambda f: f.__name__)
def test_secret_key_and_mask_cannot_be_pickled_or_copied(
    sk: SecretKey, pk: PublicKey, leak: Callable[[object], object]
) -> None:
    _, mask = pk.mask(pk.encrypt([1.0]))
    for secret in (sk, mask):
        with pytest.raises(TypeError):
            leak(secret)


def test_secret_reprs_show_no_numbers(sk: SecretKey, pk: PublicKey) -> None:
    _, mask = pk.mask(pk.encrypt([123.0]))
    for secret in (sk, mask):
        for text in (repr(secret), str(secret), f"{secret}"):
            assert not any(ch.isdigit() for ch in text), text


def test_encryption_is_randomised(pk: PublicKey) -> None:
    x = [0.0, 1.0, -1.0]
    first, second = pk.encrypt(x), pk.encrypt(x)
    assert pk.ciphertext_to_bytes(first) != pk.ciphertext_to_bytes(second)


def test_masks_are_fresh_each_call(sk: SecretKey, pk: PublicKey) -> None:
    c = pk.encrypt([0.0, 1.0])
    (m1, k1), (m2, k2) = pk.mask(c), pk.mask(c)
    assert pk.ciphertext_to_bytes(m1) != pk.ciphertext_to_bytes(m2)
    p1, p2 = sk.decrypt_masked(m1), sk.decrypt_masked(m2)
    assert p1 != p2  # the coordinator sees different masked values
    close(pk.unmask(p1, k1), [0.0, 1.0], pk)
    close(pk.unmask(p2, k2), [0.0, 1.0], pk)


# == Paillier: key generation ==================================================================
@pytest.mark.parametrize("key_bits", [256, 512, 768])
def test_paillier_key_shape(key_bits: int) -> None:
    with insecure_keys_allowed():
        key = PaillierBackend().generate_secret_key(key_bits)
    p, q, n = int(key._p), int(key._q), int(key.public_key.n)
    assert p % 4 == 3 and q % 4 == 3 and p != q
    assert p * q == n
    assert n.bit_length() == key_bits == key.public_key.key_bits
    assert gmpy2.is_prime(p) and gmpy2.is_prime(q)


def test_paillier_1024_bit_key_needs_the_switch() -> None:
    with pytest.raises(InsecureParametersError):
        PaillierBackend().generate_secret_key(1024)


@pytest.mark.parametrize("key_bits", [1000, 2047, 2049, 300, 1.5, "2048", True])
def test_paillier_key_bits_must_be_a_multiple_of_256(key_bits: object) -> None:
    for switch in (contextlib.nullcontext(), insecure_keys_allowed()):
        with switch, pytest.raises(ParameterError) as info:
            PaillierBackend().generate_secret_key(key_bits)  # type: ignore[arg-type]
        assert not isinstance(info.value, InsecureParametersError)


def test_paillier_zero_key_bits_is_refused_even_in_tests() -> None:
    with insecure_keys_allowed(), pytest.raises(InsecureParametersError):
        PaillierBackend().generate_secret_key(0)


@pytest.fixture(scope="module")
def paillier_sk() -> PaillierSecretKey:
    with insecure_keys_allowed():
        return PaillierBackend().generate_secret_key(512)


@pytest.fixture(scope="module")
def paillier_pk(paillier_sk: PaillierSecretKey) -> PaillierPublicKey:
    return paillier_sk.public_key


def test_paillier_small_public_key_outside_the_switch_is_insecure(
    paillier_pk: PaillierPublicKey,
) -> None:
    with pytest.raises(InsecureParametersError):
        PaillierBackend().public_key_from_bytes(paillier_pk.to_bytes())


def test_paillier_small_key_generation_outside_the_switch_is_insecure() -> None:
    with pytest.raises(InsecureParametersError):
        PaillierBackend().generate_secret_key(512)


def test_ckks_parameter_sets_are_fixed_and_secure() -> None:
    # CKKS has no small test keys: the ring is 8192 or 16384 with a 200-bit modulus
    # (128-bit security per the HE standard), whatever the caller asks for.
    for width, degree in ((1, 8192), (1024, 8192), (1025, 16384)):
        pk = CKKSBackend().generate_secret_key(512, vector_width=width).public_key
        assert pk.key_bits == degree
    with pytest.raises(ParameterError):
        CKKSBackend().generate_secret_key(0, vector_width=0)


def test_paillier_secret_key_must_factor_n(paillier_sk: PaillierSecretKey) -> None:
    sk = paillier_sk
    p, q = int(sk._p), int(sk._q)
    with pytest.raises(ParameterError):
        PaillierSecretKey(sk.public_key, p, q + 2)
    with pytest.raises(ParameterError):
        PaillierSecretKey(sk.public_key, p, p)


# == Paillier: strict decoding details =========================================================
def paillier_ct_bytes(pk: PaillierPublicKey, values: list[int], scale_bits: int = 32) -> bytes:
    header = struct.pack(">2sBHI8s", b"PC", 1, scale_bits, len(values), pk.fingerprint)
    return header + b"".join(v.to_bytes(pk.key_bits // 4, "big") for v in values)


def test_paillier_ciphertext_value_range(paillier_pk: PaillierPublicKey) -> None:
    pk = paillier_pk
    n, n2 = int(pk.n), int(pk.nsquare)
    assert pk.ciphertext_from_bytes(paillier_ct_bytes(pk, [1, n2 - 1])).size == 2
    for bad in (0, n2, n2 + 1, 2 ** (2 * pk.key_bits) - 1, n, 2 * n):
        with pytest.raises(RemoteProtocolError):
            pk.ciphertext_from_bytes(paillier_ct_bytes(pk, [1, bad]))


def test_paillier_ciphertext_header_checks(paillier_pk: PaillierPublicKey) -> None:
    pk = paillier_pk
    good = paillier_ct_bytes(pk, [2, 3])
    assert pk.ciphertext_from_bytes(good).size == 2
    wrong_version = good[:2] + b"\x02" + good[3:]
    count_too_big = good[:5] + struct.pack(">I", 3) + good[9:]
    count_too_small = good[:5] + struct.pack(">I", 1) + good[9:]
    bad_scale = paillier_ct_bytes(pk, [2, 3], scale_bits=4 * PLAIN_SCALE_BITS + 1)
    for bad in (wrong_version, count_too_big, count_too_small, bad_scale):
        with pytest.raises(RemoteProtocolError):
            pk.ciphertext_from_bytes(bad)


def test_paillier_public_key_field_checks(paillier_pk: PaillierPublicKey) -> None:
    pk = paillier_pk
    width = pk.key_bits // 8
    n, hs = int(pk.n), int(pk.hs)

    def encode(key_bits: int, n_value: int, hs_value: int, version: int = 1) -> bytes:
        w = key_bits // 8
        return (
            struct.pack(">2sBH", b"PK", version, key_bits)
            + n_value.to_bytes(w, "big")
            + hs_value.to_bytes(2 * w, "big")
        )

    bad = [
        encode(pk.key_bits, n, hs, version=2),
        encode(pk.key_bits, n, 0),  # hs = 0
        encode(pk.key_bits, n, n),  # hs shares a factor with n
        encode(pk.key_bits, n - 1, hs),  # even modulus
        encode(pk.key_bits, n >> 8, hs),  # modulus shorter than its header says
        encode(pk.key_bits + 256, n, hs),  # lengths disagree with the header
        struct.pack(">2sBH", b"PK", 1, 0),  # zero-length key
        struct.pack(">2sBH", b"PK", 1, 100) + bytes(300),  # not a multiple of 256
    ]
    assert len(bad[0]) == 5 + 3 * width
    with insecure_keys_allowed():
        assert PaillierPublicKey.from_bytes(encode(pk.key_bits, n, hs)) == pk
        for data in bad:
            with pytest.raises(RemoteProtocolError):
                PaillierPublicKey.from_bytes(data)


def test_paillier_ciphertexts_leave_at_one_fixed_exponent(paillier_pk: PaillierPublicKey) -> None:
    pk = paillier_pk
    # phe leaks magnitudes through per-value exponents; we use one public scale per vector.
    c = pk.encrypt([1e-9, 1.0, 1e9])
    assert c.scale_bits == VALUE_SCALE_BITS
    assert pk.mul_plain(c, [1.0, 2.0, 3.0]).scale_bits == VALUE_SCALE_BITS + PLAIN_SCALE_BITS


def test_paillier_multiplier_bound(paillier_pk: PaillierPublicKey) -> None:
    pk = paillier_pk
    c = pk.encrypt([1.0])
    pk.mul_plain(c, [2.0**29 - 1])
    with pytest.raises(ParameterError):
        pk.mul_plain(c, [2.0**29])
    with pytest.raises(ParameterError):
        pk.dot_columns(np.array([[-(2.0**29)]]), c)


# == Paillier: known-answer vectors (independent of our arithmetic) ============================
# Two 128-bit primes = 3 mod 4, found offline once with gmpy2 (2.3.2):
#   x = int.from_bytes(sha256(label).digest()[:16], "big") | (3 << 126)  # top two bits set
#   p = gmpy2.next_prime(x), repeated until p % 4 == 3
# for label = b"vfl-he kat p" and b"vfl-he kat q". n = P * Q has exactly 256 bits.
KAT_P = 329938484768074175047137889657301296559
KAT_Q = 269537805628794470887798376424917124383
KAT_N = KAT_P * KAT_Q
KAT_X = 0x1234567  # DJN: h = -x^2 mod n, h_s = h^n mod n^2
KAT_M = 123456789
KAT_R = 987654321
# (1 + KAT_M * KAT_N) * pow(KAT_R, KAT_N, KAT_N**2) % KAT_N**2, computed once with plain Python
# ints and cross-checked against phe 1.5.0's raw_encrypt(KAT_M, r_value=KAT_R).
KAT_C = int(
    "6288761233137107903675395029868859434872110724521016940727487680087491972639701505520087"
    "311498511707939333333843674240576774809207002997216393844343729197"
)


@pytest.fixture(scope="module")
def kat_sk() -> PaillierSecretKey:
    n2 = KAT_N * KAT_N
    hs = pow((-KAT_X * KAT_X) % KAT_N, KAT_N, n2)
    with insecure_keys_allowed():
        return PaillierSecretKey(PaillierPublicKey(KAT_N, hs), KAT_P, KAT_Q)


def test_kat_primes() -> None:
    assert KAT_P % 4 == 3 and KAT_Q % 4 == 3
    assert gmpy2.is_prime(KAT_P) and gmpy2.is_prime(KAT_Q)
    assert KAT_N.bit_length() == 256


def test_kat_literal_encryption(kat_sk: PaillierSecretKey) -> None:
    n2 = KAT_N * KAT_N
    assert (1 + KAT_M * KAT_N) * pow(KAT_R, KAT_N, n2) % n2 == KAT_C
    assert phe_paillier.PaillierPublicKey(KAT_N).raw_encrypt(KAT_M, r_value=KAT_R) == KAT_C
    assert kat_sk._raw_decrypt(gmpy2.mpz(KAT_C)) == KAT_M


@PROPERTY
@given(m=st.integers(0, KAT_N - 1), r=st.integers(1, KAT_N - 1))
def test_kat_raw_decrypt_agrees_with_phe(kat_sk: PaillierSecretKey, m: int, r: int) -> None:
    if gmpy2.gcd(r, KAT_N) != 1:
        return
    c = kat_sk.public_key.to_phe().raw_encrypt(m, r_value=r)
    assert kat_sk._raw_decrypt(gmpy2.mpz(c)) == kat_sk.to_phe().raw_decrypt(c) == m


@pytest.mark.parametrize("m", [0, 1, 2**32, KAT_N // 3, KAT_N - 1])
def test_kat_raw_decrypt_edge_plaintexts(kat_sk: PaillierSecretKey, m: int) -> None:
    c = kat_sk.public_key.to_phe().raw_encrypt(m, r_value=KAT_R)
    assert kat_sk._raw_decrypt(gmpy2.mpz(c)) == m


@PROPERTY
@given(x=st.lists(VALUES, min_size=1, max_size=6))
def test_kat_our_ciphertexts_are_phe_ciphertexts(kat_sk: PaillierSecretKey, x: list[float]) -> None:
    pk = kat_sk.public_key
    phe_sk = kat_sk.to_phe()
    for value, c in zip(x, pk.encrypt(x).values):
        assert phe_sk.raw_decrypt(int(c)) == round(value * 2**VALUE_SCALE_BITS) % KAT_N


def test_kat_fixed_randomness_matches_plain_pow(
    kat_sk: PaillierSecretKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With the DJN exponent a fixed, our fixed-base table must give (1 + m n) h_s^a mod n^2.
    pk = kat_sk.public_key
    a_bytes = bytes(range(7, 7 + pk.key_bits // 16))  # the exponent's bytes, little-endian
    a = int.from_bytes(a_bytes, "little")
    monkeypatch.setattr(paillier, "secrets", SimpleNamespace(token_bytes=lambda k: a_bytes[:k]))
    n, n2 = KAT_N, KAT_N * KAT_N
    hs = pow((-KAT_X * KAT_X) % n, n, n2)
    got = pk.encrypt([1.5, -2.0])
    for value, c in zip([1.5, -2.0], got.values):
        m = round(value * 2**VALUE_SCALE_BITS) % n
        assert int(c) == (1 + m * n) * pow(hs, a, n2) % n2
    assert kat_sk.to_phe().raw_decrypt(int(got.values[1])) == n - 2 * 2**VALUE_SCALE_BITS


# == multi-exponentiation ======================================================================
@st.composite
def multi_exp_cases(draw: st.DrawFn) -> tuple[list[int], list[int], int]:
    modulus = draw(st.one_of(st.integers(2, 2**130), st.just(KAT_N * KAT_N)))
    k = draw(st.integers(0, 70))
    bases = draw(st.lists(st.integers(0, 2 * modulus), min_size=k, max_size=k))
    exponent = st.one_of(st.just(0), st.integers(0, 15), st.integers(0, 2**63 - 1))
    exponents = draw(st.lists(exponent, min_size=k, max_size=k))
    return bases, exponents, modulus


def naive_multi_exp(bases: list[int], exponents: list[int], modulus: int) -> int:
    result = 1 % modulus
    for b, e in zip(bases, exponents):
        result = result * pow(b, e, modulus) % modulus
    return result


@settings(max_examples=60, deadline=None)
@given(data=multi_exp_cases())
def test_multi_exp_matches_naive(data: tuple[list[int], list[int], int]) -> None:
    bases, exponents, modulus = data
    mpz_bases = [gmpy2.mpz(b) for b in bases]
    got = multi_exp(mpz_bases, np.array(exponents, dtype=np.int64), gmpy2.mpz(modulus))
    assert int(got) == naive_multi_exp(bases, exponents, modulus)


def test_multi_exp_edge_cases() -> None:
    mod = gmpy2.mpz(KAT_N * KAT_N)
    b = [gmpy2.mpz(12345), gmpy2.mpz(67890)]
    assert multi_exp([], np.array([], dtype=np.int64), mod) == 1
    assert multi_exp(b, np.array([0, 0]), mod) == 1
    assert multi_exp(b[:1], np.array([1]), mod) == 12345
    assert multi_exp(b[:1], np.array([2**63 - 1]), mod) == pow(12345, 2**63 - 1, int(mod))
    assert multi_exp(b, np.array([0, 5]), mod) == pow(67890, 5, int(mod))
    with pytest.raises(ValueError):
        multi_exp(b, np.array([1, -1]), mod)


def test_multi_exp_widest_window() -> None:
    # Enough terms that the bucket window reaches its 12-bit cap.
    rng = np.random.default_rng(7)
    modulus = 2**127 - 1
    bases = [int(v) for v in rng.integers(1, 2**62, size=20_000)]
    exponents = rng.integers(0, 2**62, size=20_000)
    got = multi_exp([gmpy2.mpz(v) for v in bases], exponents, gmpy2.mpz(modulus))
    assert int(got) == naive_multi_exp(bases, exponents.tolist(), modulus)
