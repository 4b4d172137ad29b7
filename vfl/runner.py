"""The one I/O loop: moves messages between roles through a transport.

Roles decide, the runner delivers. Every message is encoded to bytes by the sender's side and
decoded from bytes by the receiver's side, so the in-memory run exercises the same wire format
as a networked one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from protocols.errors import ProtocolError, TransportError
from protocols.transport import InMemoryTransport
from protocols.wire import Envelope, MessageRegistry
from vfl.roles import Outgoing

__all__ = ["Role", "run_session"]


class Role(Protocol):
    name: str
    session_id: bytes

    @property
    def done(self) -> bool: ...

    def handle(self, sender: str, envelope: Envelope) -> list[Outgoing]: ...


def _send(
    transport: InMemoryTransport, registry: MessageRegistry, sender: Role, items: list[Outgoing]
) -> None:
    for item in items:
        frame = registry.encode(
            item.message, session_id=sender.session_id, round_index=item.round_index
        )
        transport.send(
            sender.name,
            item.receiver,
            frame,
            message_type=type(item.message).__name__,
            round_index=item.round_index,
        )


def run_session(
    roles: Mapping[str, Role],
    first: tuple[Role, list[Outgoing]],
    transport: InMemoryTransport,
    registry: MessageRegistry,
    *,
    on_message: Callable[[], None] | None = None,
    max_messages: int = 10_000_000,
) -> None:
    """Deliver messages until every queue is empty, then check that every role finished.

    ``first`` is the role that opens the session and the messages it wants sent.
    """
    starter, opening = first
    _send(transport, registry, starter, opening)
    delivered = 0
    while transport.has_pending():
        for name, role in roles.items():
            item = transport.receive(name)
            if item is None:
                continue
            sender, frame = item
            envelope = registry.decode(frame)
            _send(transport, registry, role, role.handle(sender, envelope))
            delivered += 1
            if on_message is not None:
                on_message()
            if delivered > max_messages:
                raise TransportError(f"session exceeded {max_messages} messages")
    unfinished = [name for name, role in roles.items() if not role.done]
    if unfinished:
        raise ProtocolError(f"session ended with unfinished roles: {', '.join(unfinished)}")
