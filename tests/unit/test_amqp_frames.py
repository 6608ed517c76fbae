"""A publish's frames as shared.amqp_connection makes them: byte for byte pika's own."""

from __future__ import annotations

from types import SimpleNamespace

import pika
import pytest
from pika import frame, spec
from pika.exceptions import ChannelWrongStateError

from shared.amqp_connection import Connection

PROPERTIES = pika.BasicProperties(
    content_type="application/cloudevents+json",
    delivery_mode=2,
    message_id="m-1",
    timestamp=1_764_000_000,
    headers={"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"},
)


class FrameRecorder(Connection):
    """Only the marshalling of a Connection: what it would send is recorded (no socket)."""

    def __init__(self, body_max_length: int) -> None:  # no super(): nothing is opened
        self._body_max_length = body_max_length
        self.frames: list[bytes] = []

    def _output_marshaled_frames(self, marshaled_frames: list[bytes]) -> None:
        self.frames += marshaled_frames


def pikas_frames(number: int, routing_key: str, body: bytes, body_max_length: int) -> list[bytes]:
    recorder = FrameRecorder(body_max_length)
    publish = spec.Basic.Publish(exchange="event-relay", routing_key=routing_key, mandatory=True)
    pika.connection.Connection._send_message(recorder, number, publish, (PROPERTIES, body))
    return recorder.frames


@pytest.mark.parametrize(
    ("body", "frames"),
    [(b'{"n":1}', 3), (b"x" * 100, 3), (b"x" * 250, 5), (b"", 2)],
    ids=["small", "one-whole-frame", "split-in-three", "empty"],
)
def test_the_frames_are_pikas_own_on_every_channel_and_route(body: bytes, frames: int) -> None:
    for number, routing_key in [(1, "vm.isolate"), (2, "vm.isolate"), (1, "vm.isolate.test")]:
        ours = FrameRecorder(body_max_length=100)
        channel = SimpleNamespace(is_open=True, channel_number=number)
        ours.basic_publish(channel, "event-relay", routing_key, body, PROPERTIES, mandatory=True)
        assert ours.frames == pikas_frames(number, routing_key, body, body_max_length=100)
        assert len(ours.frames) == frames


def test_a_closed_channel_refuses_the_publish_as_pika_does() -> None:
    recorder = FrameRecorder(body_max_length=100)
    channel = SimpleNamespace(is_open=False, channel_number=1)
    with pytest.raises(ChannelWrongStateError):
        recorder.basic_publish(
            channel, "event-relay", "vm.isolate", b"{}", PROPERTIES, mandatory=True
        )
    assert recorder.frames == []


class FrameReader(Connection):
    """Only the frame dispatch of a Connection (no socket); what reaches pika's own is kept."""

    def __init__(self) -> None:  # no super(): nothing is opened
        self._confirm_handlers = {}
        self._channels: dict[int, object] = {}
        self.connection_state = self.CONNECTION_OPEN
        self.frames_received = 0
        self.to_pika: list[object] = []

    def _process_callbacks(self, frame_value: object) -> bool:  # pika's dispatch from here on
        self.to_pika.append(frame_value)
        return True


def test_a_confirm_goes_straight_to_its_channels_handler_and_no_further() -> None:
    reader = FrameReader()
    confirms: list[object] = []
    channel = SimpleNamespace(channel_number=1, confirm_delivery=lambda **_: None)
    reader._channels[1] = channel
    reader.confirm_delivery(channel, on_confirm=confirms.append, on_ready=lambda _: None)
    ack = frame.Method(1, spec.Basic.Ack(delivery_tag=3, multiple=True))
    nack = frame.Method(1, spec.Basic.Nack(delivery_tag=4))
    on_another_channel = frame.Method(2, spec.Basic.Ack(delivery_tag=1))
    not_a_confirm = frame.Method(1, spec.Basic.Return(reply_code=312, reply_text="NO_ROUTE"))
    for each in (ack, nack, on_another_channel, not_a_confirm):
        reader._process_frame(each)
    assert confirms == [ack, nack]  # once each: pika's callbacks never see them
    assert reader.to_pika == [on_another_channel, not_a_confirm]
    assert reader.frames_received == 4
    # Closed, the channel's number may be taken by a new channel: its confirms are not ours.
    reader._on_channel_cleanup(channel)
    reader._process_frame(ack)
    assert confirms == [ack, nack]
    assert reader.to_pika[-1] is ack
