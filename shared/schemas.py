"""Event schemas: the base every event shares, and one model per event type.

An event type is declared once, by its model: `class VmIsolate(Event, event_type="vm_isolate",
routing_key="vm.isolate")` names the function that relays it (its folder functions/vm_isolate/
and its manifest entry) and the routing key of its queue; `EVENT_TYPES` lists them all.

Models are strict (a JSON string is never coerced into a number) and reject unknown fields,
so a typo in a sender's template is an error the sender sees, not a silently dropped field.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyAddress,
    StringConstraints,
)

MAX_DETAILS_BYTES = 16 * 1024

_HOST_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"
_NO_CONTROL_BUT_NEWLINES = r"^[^\x00-\x08\x0b-\x1f\x7f]*$"


def _valid_hostname(value: str) -> str:
    """RFC 1123 host name or FQDN, lower-cased, without a trailing dot."""
    name = value.lower().removesuffix(".")
    if not 0 < len(name) <= 253 or not all(map(_HOST_LABEL.fullmatch, name.split("."))):
        raise ValueError("must be a DNS host name or FQDN (RFC 1123), at most 253 characters")
    return name


# json.dumps(value, separators=(",", ":")), with one encoder rather than a new one per call.
_compact_json = json.JSONEncoder(separators=(",", ":")).encode


def _bounded_details(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is not None and len(_compact_json(value)) > MAX_DETAILS_BYTES:
        raise ValueError(f"must serialize to at most {MAX_DETAILS_BYTES} bytes of JSON")
    return value


Hostname = Annotated[str, StringConstraints(max_length=254), AfterValidator(_valid_hostname)]
ShortText = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128, pattern=_NO_CONTROL)
]
Text = Annotated[str, StringConstraints(max_length=1000, pattern=_NO_CONTROL_BUT_NEWLINES)]
RequiredText = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=1000, pattern=_NO_CONTROL_BUT_NEWLINES
    ),
]
Details = Annotated[dict[str, Any] | None, AfterValidator(_bounded_details)]
VmId = Annotated[
    str,
    StringConstraints(
        pattern=r"^(vm-\d{1,12}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$"
    ),
]


def _now() -> datetime:
    return datetime.now(UTC)


_ROUTING_KEY = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
_EVENT_TYPE = re.compile(r"[a-z][a-z0-9_]{0,48}")  # also a Cloud Run service name, once dashed
EVENT_TYPES: dict[str, type[Event]] = {}  # every event type by name, in declaration order


class Event(BaseModel):
    """Fields every event carries."""

    # defer_build: a function builds only its own model's validator, at its first request,
    # rather than every event type's at import (a cold-start cost).
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, defer_build=True)

    event_type: ClassVar[str]  # the function relaying it, its folder and its manifest entry
    routing_key: ClassVar[str]  # the key of its messages on the exchange

    def __init_subclass__(
        cls, *, event_type: str | None = None, routing_key: str | None = None, **kwargs: Any
    ) -> None:
        super().__init_subclass__(**kwargs)
        if event_type is None and routing_key is None:
            return  # a base of other models, not an event type of its own
        if event_type is None or not _EVENT_TYPE.fullmatch(event_type):
            raise TypeError(f"{cls.__name__}: event_type must match {_EVENT_TYPE.pattern}")
        if routing_key is None or not _ROUTING_KEY.fullmatch(routing_key):
            raise TypeError(f"{cls.__name__}: routing_key must match {_ROUTING_KEY.pattern}")
        for other in EVENT_TYPES.values():
            if event_type == other.event_type or routing_key == other.routing_key:
                raise TypeError(f"{cls.__name__}: {event_type} or {routing_key} is taken")
        cls.event_type, cls.routing_key = event_type, routing_key
        EVENT_TYPES[event_type] = cls

    hostname: Hostname = Field(
        description="The affected host: an RFC 1123 host name or FQDN, at most 253 characters; "
        "lower-cased."
    )
    severity: Literal["info", "warning", "critical"] = Field(
        "warning", description="`info`, `warning` or `critical`."
    )
    source: ShortText = Field(description="The system that raised the alert, 1 to 128 characters.")
    detected_at: AwareDatetime = Field(
        default_factory=_now,
        description="When it was detected: an RFC 3339 date-time with a time zone; default: "
        "when received.",
    )
    summary: Text = Field("", description="At most 1,000 characters.")
    details: Details = Field(None, description="Any JSON object, at most 16 KiB.")


class VmIsolate(Event, event_type="vm_isolate", routing_key="vm.isolate"):
    """A compromised VM that must be cut off from the network."""

    reason: RequiredText = Field(description="Why: 1 to 1,000 characters.")
    vm_id: VmId | None = Field(
        None, description="The vCenter managed object id (`vm-1234`) or the VM's UUID."
    )
    ip_address: IPvAnyAddress | None = Field(None, description="IPv4 or IPv6.")


# A POSIX absolute path, or a Windows drive: `C:`, `C:\`, `C:\data\logs` (either slash).
MountPoint = Annotated[
    str,
    StringConstraints(
        min_length=1,
        max_length=4096,
        pattern=r"^(/[^\x00-\x1f\x7f]*|[A-Za-z]:([\\/][^\x00-\x1f\x7f<>:\"|?*]*)?)$",
    ),
]
# systemd: `nginx.service`, `getty@tty1.service` or a bare `nginx`; Windows: a service name
# (never a path separator). Either way no control characters, at most 256 characters.
ServiceName = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f/\\]+$"
    ),
]
Username = Annotated[
    str, StringConstraints(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$")
]


class DiskSpaceLow(Event, event_type="disk_space_low", routing_key="disk.space-low"):
    """A file system that is running out of space."""

    mount_point: MountPoint = Field(
        description="An absolute POSIX path, or a drive: `C:`, `C:\\`, `C:\\data`."
    )
    used_percent: float = Field(ge=0, le=100, description="A number from 0 to 100.")
    free_bytes: int = Field(ge=0, description="An integer ≥ 0.")


class ServiceDown(Event, event_type="service_down", routing_key="service.down"):
    """A service that stopped and should be restarted."""

    service_name: ServiceName = Field(
        description="A systemd unit (`nginx.service`, `getty@tty1.service`), a bare name, or a "
        "Windows service name; no `/` or `\\`, at most 256 characters."
    )
    platform: Literal["linux", "windows"] = Field(description="`linux` or `windows`.")


class LoginBruteforce(
    Event, event_type="login_bruteforce", routing_key="security.login-bruteforce"
):
    """Repeated failed logins from one address: block it."""

    source_ip: IPvAnyAddress = Field(description="IPv4 or IPv6.")
    username: Username | None = Field(
        None, description="At most 256 characters, no control characters."
    )
    failed_attempts: int = Field(ge=1, description="An integer ≥ 1.")
    window_seconds: int = Field(ge=1, le=7 * 24 * 3600, description="An integer, 1 to 604800.")
