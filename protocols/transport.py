"""In-memory transport: moves encoded frames between named parties and keeps a transcript.

The transport only moves bytes. Roles never see it; the runner (the one I/O loop) takes the
messages a role wants sent, encodes them, and hands the frames to the transport. A networked
transport implements the same three methods.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from dataclasses import dataclass

from protocols.errors import ParameterError, TransportError

__all__ = ["TranscriptEntry", "InMemoryTransport"]


@dataclass(frozen=True)
class TranscriptEntry:
    """One frame as the transport saw it. ``payload`` is kept only when asked for (tests)."""

    sender: str
    receiver: str
    round_index: int
    message_type: str
    size_bytes: int
    payload: bytes | None = None


class InMemoryTransport:
    """FIFO queues between named parties, recording every frame in :attr:`transcript`.

    Parameters
    ----------
    parties:
        Names of the parties that may send and receive.
    keep_payloads:
        Also keep each frame's bytes in the transcript (for audits and tests; memory-hungry).
    """

    def __init__(self, parties: Iterable[str], *, keep_payloads: bool = False) -> None:
        self.parties = tuple(parties)
        if len(set(self.parties)) != len(self.parties):
            raise ParameterError("party names must be unique")
        self.keep_payloads = keep_payloads
        self.transcript: list[TranscriptEntry] = []
        self._queues: dict[str, collections.deque[tuple[str, bytes]]] = {
            name: collections.deque() for name in self.parties
        }

    def send(
        self, sender: str, receiver: str, frame: bytes, *, message_type: str, round_index: int
    ) -> None:
        """Queue ``frame`` for ``receiver`` and record it."""
        for name in (sender, receiver):
            if name not in self._queues:
                raise TransportError(f"unknown party {name!r}")
        if not isinstance(frame, bytes):
            raise TransportError("frames must be bytes")
        self.transcript.append(
            TranscriptEntry(
                sender=sender,
                receiver=receiver,
                round_index=round_index,
                message_type=message_type,
                size_bytes=len(frame),
                payload=frame if self.keep_payloads else None,
            )
        )
        self._queues[receiver].append((sender, frame))

    def receive(self, receiver: str) -> tuple[str, bytes] | None:
        """Next ``(sender, frame)`` waiting for ``receiver``, or ``None``."""
        queue = self._queues.get(receiver)
        if queue is None:
            raise TransportError(f"unknown party {receiver!r}")
        return queue.popleft() if queue else None

    def has_pending(self) -> bool:
        return any(self._queues.values())

    def bytes_sent(self) -> int:
        return sum(entry.size_bytes for entry in self.transcript)
