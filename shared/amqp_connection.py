"""pika's asyncio connection, with its bytes carried the way the event loop carries its own.

pika's asyncio adapter drives TLS in Python on a bare socket: every write adds a write watch,
waits a loop turn for it and removes it again, and every read ends in a failed read and a
self-wake-up of the loop. Here pika keeps its connection, frames, channels and confirms, and the
event loop's own transport (in C, with uvloop) carries the TLS stream: the same certificates and
hostname check, from the same `SSLContext`.

The frames of one event-loop turn (every message published meanwhile) go out together, as one
TLS record and one send(), the same bytes in the same order, where pika hands each frame of a
message (method, header, body) to the socket on its own. A publish marshals only what changes
from message to message (the header and the body): its method frame is made once per route.
A confirm goes from the frame reader straight to its channel's handler.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from functools import lru_cache
from typing import Any, cast

from pika import frame, spec
from pika.adapters.asyncio_connection import AsyncioConnection, _AsyncioIOServicesAdapter
from pika.adapters.utils.nbio_interface import AbstractIOReference
from pika.exceptions import ChannelWrongStateError

# pika's stream result: (transport, protocol) once linked up, or the error.
OnStreamDone = Callable[[Any], None]
OnConfirm = Callable[[frame.Method], None]
_CONFIRMS = (spec.Basic.Ack, spec.Basic.Nack)


class Connection(AsyncioConnection):  # type: ignore[misc]
    """An AsyncioConnection on the loop's transport, sending each loop turn's frames at once."""

    _pending: list[bytes] | None = None

    def __init__(
        self, parameters: Any, *, loop: asyncio.AbstractEventLoop, **callbacks: Any
    ) -> None:
        self._confirm_handlers: dict[int, OnConfirm] = {}  # by channel number
        super().__init__(parameters, custom_ioloop=_LoopStreams(loop), **callbacks)

    def confirm_delivery(
        self, channel: Any, *, on_confirm: OnConfirm, on_ready: Callable[[Any], None]
    ) -> None:
        """Put `channel` in confirm mode, as `channel.confirm_delivery` does, with its confirms
        (Basic.Ack and Basic.Nack frames) handed to `on_confirm` as they are read: pika's
        callback manager looks each one up by channel and method through two layers of
        wrappers."""
        channel.confirm_delivery(ack_nack_callback=on_confirm, callback=on_ready)
        self._confirm_handlers[channel.channel_number] = on_confirm

    def _process_frame(self, frame_value: Any) -> None:
        if type(frame_value) is frame.Method and type(frame_value.method) in _CONFIRMS:
            on_confirm = self._confirm_handlers.get(frame_value.channel_number)
            if on_confirm is not None:
                self.frames_received += 1
                on_confirm(frame_value)
                return
        super()._process_frame(frame_value)

    def _on_channel_cleanup(self, channel: Any) -> None:
        # A channel closed: a new one may take its number, with confirms of its own.
        self._confirm_handlers.pop(channel.channel_number, None)
        super()._on_channel_cleanup(channel)

    def basic_publish(
        self,
        channel: Any,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: spec.BasicProperties,
        *,
        mandatory: bool,
    ) -> None:
        """Send what `channel.basic_publish` sends, the same frames, with the method frame
        (the same for every message of a route) taken from a cache, where pika makes and
        encodes a Basic.Publish for each message."""
        if not channel.is_open:
            raise ChannelWrongStateError("Channel is closed.")  # as pika's own says it
        number = channel.channel_number
        step = self._body_max_length
        self._output_marshaled_frames(
            [
                _publish_frame(number, exchange, routing_key, mandatory),
                frame.Header(number, len(body), properties).marshal(),
                *(
                    frame.Body(number, body[at : at + step]).marshal()
                    for at in range(0, len(body), step)
                ),
            ]
        )

    def _output_marshaled_frames(self, marshaled_frames: list[bytes]) -> None:
        self.frames_sent += len(marshaled_frames)
        if self._pending is None:
            self._pending = []
            self.ioloop.call_soon(self._flush)
        self._pending += marshaled_frames

    def _flush(self) -> None:
        joined = b"".join(self._pending or ())
        self._pending = None
        self.bytes_sent += len(joined)
        if joined and self._transport is not None:  # closed meanwhile: nothing to send it on
            self._adapter_emit_data(joined)


@lru_cache(maxsize=256)  # a few routes per function, on a channel or two
def _publish_frame(channel_number: int, exchange: str, routing_key: str, mandatory: bool) -> bytes:
    publish = spec.Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=mandatory)
    marshalled: bytes = frame.Method(channel_number, publish).marshal()
    return marshalled


class _LoopStreams(_AsyncioIOServicesAdapter):  # type: ignore[misc]
    """pika's asyncio services, its streams opened with `loop.create_connection`."""

    def create_streaming_connection(
        self,
        protocol_factory: Callable[[], Any],
        sock: socket.socket,
        on_done: OnStreamDone,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> AbstractIOReference:
        loop = self.get_native_ioloop()
        stream = _Stream(protocol_factory, on_done)
        opening = loop.create_task(
            loop.create_connection(
                lambda: stream, sock=sock, ssl=ssl_context, server_hostname=server_hostname
            )
        )
        opening.add_done_callback(stream.opened)
        return _Opening(stream, opening)


class _Stream(asyncio.Protocol):
    """Between the two: asyncio's protocol for the loop's transport, pika's transport for
    pika's protocol (write, abort, get_protocol, get_write_buffer_size)."""

    def __init__(self, protocol_factory: Callable[[], Any], on_done: OnStreamDone) -> None:
        self._protocol_factory = protocol_factory
        self._on_done: OnStreamDone | None = on_done
        self._transport: asyncio.Transport | None = None
        self._protocol: Any = None
        self._aborted = False  # by pika

    def _report(self, result: Any) -> None:
        on_done, self._on_done = self._on_done, None
        if on_done is not None:
            on_done(result)

    @property
    def reported(self) -> bool:
        return self._on_done is None

    def cancel(self) -> None:
        self._on_done = None  # pika hears nothing more of a stream it cancelled

    # asyncio's side: pika sees connection_made, then on_done, before any data (as with its own).
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        try:
            self._protocol = self._protocol_factory()
            self._protocol.connection_made(self)
        except Exception as error:
            self._protocol = None
            self._transport.abort()
            self._report(error)
            return
        self._report((self, self._protocol))

    def opened(self, opening: asyncio.Task[Any]) -> None:
        """The TLS handshake failed (or was cancelled) before pika had a stream."""
        if not opening.cancelled() and opening.exception() is not None:
            self._report(opening.exception())

    def data_received(self, data: bytes) -> None:
        self._protocol.data_received(data)

    def eof_received(self) -> bool:
        return bool(self._protocol.eof_received())

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is None and not self._aborted:
            # The broker went away without a TLS close_notify: to pika, None means it aborted.
            exc = ConnectionResetError("the broker closed the connection")
        if self._protocol is not None:
            protocol, self._protocol = self._protocol, None
            protocol.connection_lost(exc)

    # pika's side
    def write(self, data: bytes) -> None:
        assert self._transport is not None
        if not self._transport.is_closing():  # as pika's own: writes after a close are dropped
            self._transport.write(data)

    def abort(self) -> None:
        assert self._transport is not None
        self._aborted = True
        self._transport.abort()

    def get_protocol(self) -> Any:
        return self._protocol

    def get_write_buffer_size(self) -> int:
        assert self._transport is not None
        return self._transport.get_write_buffer_size()


class _Opening(AbstractIOReference):  # type: ignore[misc]
    def __init__(self, stream: _Stream, opening: asyncio.Task[Any]) -> None:
        self._stream = stream
        self._opening = opening

    def cancel(self) -> bool:
        if self._stream.reported:
            return False
        self._stream.cancel()
        self._opening.cancel()
        return True
