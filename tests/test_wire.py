"""Tests for ``protocols.wire``: round trips and strict rejection of malformed frames."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from protocols.errors import LocalProtocolError, RemoteProtocolError
from protocols.wire import (
    FORMAT_VERSION,
    SESSION_ID_BYTES,
    Envelope,
    Message,
    MessageRegistry,
)

HEADER_BYTES = 2 + 1 + 2 + SESSION_ID_BYTES + 4
SESSION = bytes(range(SESSION_ID_BYTES))

REGISTRY = MessageRegistry("wire-test")


@REGISTRY.register
@dataclass(frozen=True, eq=False)
class AllKinds(Message):
    """A throwaway message with one field of every supported kind."""

    TYPE_ID: ClassVar[int] = 0x0101
    flag: bool
    count: int
    ratio: float
    label: str
    blob: bytes
    values: np.ndarray


@REGISTRY.register
@dataclass(frozen=True)
class Validated(Message):
    """Rejects negative counts in ``__post_init__``, as real messages validate content."""

    TYPE_ID: ClassVar[int] = 0x0102
    count: int

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ValueError("count must be non-negative")


@dataclass(frozen=True)
class Unregistered(Message):
    TYPE_ID: ClassVar[int] = 0x0103
    count: int


def sample(**changes: object) -> AllKinds:
    fields: dict[str, object] = {
        "flag": True,
        "count": -42,
        "ratio": 0.5,
        "label": "LABEL!",
        "blob": b"\x00\x01\x02",
        "values": np.array([1.0, -2.5, np.inf]),
    }
    fields.update(changes)
    return AllKinds(**fields)  # type: ignore[arg-type]


def encode(message: Message, registry: MessageRegistry = REGISTRY) -> bytes:
    return registry.encode(message, session_id=SESSION, round_index=3)


def f64_bits(value: float) -> bytes:
    return struct.pack(">d", value)


def assert_same(a: AllKinds, b: AllKinds) -> None:
    assert type(a) is type(b)
    assert a.flag is b.flag
    assert type(b.count) is int and a.count == b.count
    assert f64_bits(a.ratio) == f64_bits(b.ratio)  # bit-exact: -0.0, NaN, inf
    assert a.label == b.label
    assert bytes(a.blob) == b.blob
    assert b.values.dtype == np.float64 and b.values.ndim == 1
    assert a.values.astype(">f8").tobytes() == b.values.astype(">f8").tobytes()


# -- round trips -----------------------------------------------------------------------------
messages = st.builds(
    AllKinds,
    flag=st.booleans(),
    count=st.integers(-(2**63), 2**63 - 1),
    ratio=st.floats(),
    label=st.text(max_size=20),
    blob=st.binary(max_size=40),
    values=hnp.arrays(np.float64, st.integers(0, 10)),
)


@settings(max_examples=100, deadline=None)
@given(
    message=messages,
    session_id=st.binary(min_size=SESSION_ID_BYTES, max_size=SESSION_ID_BYTES),
    round_index=st.integers(0, 2**32 - 1),
)
def test_round_trip(message: AllKinds, session_id: bytes, round_index: int) -> None:
    frame = REGISTRY.encode(message, session_id=session_id, round_index=round_index)
    envelope = REGISTRY.decode(frame)
    assert isinstance(envelope, Envelope)
    assert envelope.session_id == session_id
    assert envelope.round_index == round_index
    assert_same(message, envelope.message)  # type: ignore[arg-type]


def test_header_layout() -> None:
    frame = encode(sample())
    assert frame[:2] == b"VF"
    assert frame[2] == FORMAT_VERSION
    assert frame[3:5] == AllKinds.TYPE_ID.to_bytes(2, "big")
    assert frame[5 : 5 + SESSION_ID_BYTES] == SESSION
    assert frame[HEADER_BYTES - 4 : HEADER_BYTES] == (3).to_bytes(4, "big")


def test_numpy_scalars_and_buffers_are_accepted() -> None:
    message = sample(flag=np.bool_(False), count=np.int64(7), ratio=np.float32(0.25))
    decoded = REGISTRY.decode(bytearray(encode(message))).message
    assert decoded.flag is False and decoded.count == 7 and decoded.ratio == 0.25
    assert REGISTRY.decode(memoryview(encode(message))).message.count == 7


def test_int_accepted_for_float_field() -> None:
    assert REGISTRY.decode(encode(sample(ratio=3))).message.ratio == 3.0


# -- decoding rejects ------------------------------------------------------------------------
def test_bad_magic() -> None:
    frame = encode(sample())
    for magic in (b"XX", b"vf", b"\x00\x00"):
        with pytest.raises(RemoteProtocolError):
            REGISTRY.decode(magic + frame[2:])


@pytest.mark.parametrize("version", [0, FORMAT_VERSION + 1, 255])
def test_wrong_version(version: int) -> None:
    frame = encode(sample())
    with pytest.raises(RemoteProtocolError):
        REGISTRY.decode(frame[:2] + bytes([version]) + frame[3:])


@pytest.mark.parametrize("type_id", [0, Unregistered.TYPE_ID, 0xFFFF])
def test_unknown_type_id(type_id: int) -> None:
    frame = encode(sample())
    with pytest.raises(RemoteProtocolError):
        REGISTRY.decode(frame[:3] + type_id.to_bytes(2, "big") + frame[5:])


def test_truncated_at_every_prefix() -> None:
    frame = encode(sample())
    for end in range(len(frame)):
        with pytest.raises(RemoteProtocolError):
            REGISTRY.decode(frame[:end])


@pytest.mark.parametrize("extra", [b"\x00", b"\xff" * 9])
def test_trailing_bytes(extra: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        REGISTRY.decode(encode(sample()) + extra)


@pytest.mark.parametrize("byte", [2, 0x80, 0xFF])
def test_invalid_bool_byte(byte: int) -> None:
    frame = bytearray(encode(sample()))
    assert frame[HEADER_BYTES] == 1  # the flag is the first field
    frame[HEADER_BYTES] = byte
    with pytest.raises(RemoteProtocolError):
        REGISTRY.decode(bytes(frame))


@pytest.mark.parametrize(
    "raw", [b"\xff" * 6, b"\xc3(abcd", b"\xed\xa0\x80abc", b"abcde\xc3"]
)  # bad start byte, bad continuation, encoded surrogate, cut-off sequence
def test_invalid_utf8(raw: bytes) -> None:
    frame = encode(sample(label="LABEL!"))
    start = frame.index(b"LABEL!")
    assert len(raw) == 6
    with pytest.raises(RemoteProtocolError):
        REGISTRY.decode(frame[:start] + raw + frame[start + 6 :])


def test_length_prefix_beyond_the_frame() -> None:
    frame = encode(sample(blob=b"", values=np.array([])))
    # The array's element count is the last four bytes; claim 2^32 - 1 elements.
    with pytest.raises(RemoteProtocolError):
        REGISTRY.decode(frame[:-4] + b"\xff\xff\xff\xff")


def test_content_validation_errors_become_remote_errors() -> None:
    assert REGISTRY.decode(encode(Validated(5))).message == Validated(5)
    frame = bytearray(encode(Validated(5)))
    frame[HEADER_BYTES:] = struct.pack(">q", -1)
    with pytest.raises(RemoteProtocolError):
        REGISTRY.decode(bytes(frame))


def test_non_bytes_frame() -> None:
    for frame in ("VF", None, [1, 2, 3]):
        with pytest.raises(RemoteProtocolError):
            REGISTRY.decode(frame)  # type: ignore[arg-type]


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=120))
def test_garbage_decodes_or_raises_remote_error(data: bytes) -> None:
    try:
        REGISTRY.decode(data)
    except RemoteProtocolError:
        pass


@settings(max_examples=100, deadline=None)
@given(position=st.integers(0, 10_000), value=st.integers(0, 255))
def test_single_byte_corruption_never_escapes_the_error_tree(position: int, value: int) -> None:
    frame = bytearray(encode(sample()))
    frame[position % len(frame)] = value
    try:
        REGISTRY.decode(bytes(frame))
    except RemoteProtocolError:
        pass


# -- size limits -----------------------------------------------------------------------------
def test_oversize_frame_on_encode_and_decode() -> None:
    small = MessageRegistry("small", max_frame_bytes=128)
    small.register(AllKinds)
    base = len(encode(sample(blob=b"")))
    fits = sample(blob=b"x" * (128 - base))
    assert len(encode(fits, small)) == 128  # exactly at the limit is fine
    assert small.decode(encode(fits)).message.blob == fits.blob

    too_big = sample(blob=b"x" * (129 - base))
    with pytest.raises(LocalProtocolError):
        encode(too_big, small)
    with pytest.raises(RemoteProtocolError):
        small.decode(encode(too_big))  # made by a registry with the default limit


# -- encoding rejects ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "session_id", [b"", b"x" * (SESSION_ID_BYTES - 1), b"x" * (SESSION_ID_BYTES + 1), "x" * 16]
)
def test_wrong_session_id_on_encode(session_id: object) -> None:
    with pytest.raises(LocalProtocolError):
        REGISTRY.encode(sample(), session_id=session_id, round_index=0)  # type: ignore[arg-type]


@pytest.mark.parametrize("round_index", [-1, 2**32, 1.5, True, "1"])
def test_bad_round_index_on_encode(round_index: object) -> None:
    with pytest.raises(LocalProtocolError):
        REGISTRY.encode(
            sample(),
            session_id=SESSION,
            round_index=round_index,  # type: ignore[arg-type]
        )


@pytest.mark.parametrize(
    "changes",
    [
        {"flag": 1},
        {"flag": "yes"},
        {"count": True},
        {"count": 1.0},
        {"count": "1"},
        {"count": 2**63},
        {"count": -(2**63) - 1},
        {"ratio": "0.5"},
        {"ratio": True},
        {"ratio": 10**400},
        {"label": b"bytes"},
        {"label": "\ud800"},
        {"blob": "text"},
        {"blob": [1, 2]},
        {"values": np.ones((2, 2))},
        {"values": np.arange(3)},
        {"values": np.ones(3, dtype=np.float32)},
        {"values": 1.0},
    ],
    ids=repr,
)
def test_wrong_field_type_on_encode(changes: dict[str, object]) -> None:
    with pytest.raises(LocalProtocolError):
        encode(sample(**changes))


def test_unregistered_message_on_encode() -> None:
    with pytest.raises(LocalProtocolError):
        encode(Unregistered(1))


# -- registry ----------------------------------------------------------------------------------
def test_registry_rejects_bad_type_ids_and_field_types() -> None:
    registry = MessageRegistry("registry-test")
    registry.register(Validated)
    with pytest.raises(TypeError):
        registry.register(Validated)  # duplicate id

    @dataclass(frozen=True)
    class ZeroId(Message):
        TYPE_ID: ClassVar[int] = 0
        count: int

    @dataclass(frozen=True)
    class ListField(Message):
        TYPE_ID: ClassVar[int] = 9
        items: list

    for cls in (ZeroId, ListField):
        with pytest.raises(TypeError):
            registry.register(cls)
    assert list(registry.types()) == [Validated]
