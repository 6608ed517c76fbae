"""Event schemas: the base every event shares, and one model per event type.

Models are strict (a JSON string is never coerced into a number) and reject unknown fields,
so a typo in a sender's template is an error the sender sees, not a silently dropped field.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

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


def _bounded_details(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is not None and len(json.dumps(value, separators=(",", ":"))) > MAX_DETAILS_BYTES:
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


class Event(BaseModel):
    """Fields every event carries."""

    # defer_build: a function builds only its own model's validator, at its first request,
    # rather than every event type's at import (a cold-start cost).
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, defer_build=True)

    hostname: Hostname = Field(description="The affected host: a DNS host name or FQDN.")
    severity: Literal["info", "warning", "critical"] = "warning"
    source: ShortText = Field(description="The system that raised the alert.")
    detected_at: AwareDatetime = Field(default_factory=_now, description="When it was detected.")
    summary: Text = ""
    details: Details = Field(None, description="Free JSON object, at most 16 KiB.")


class VmIsolate(Event):
    """A compromised VM that must be cut off from the network."""

    reason: RequiredText
    vm_id: VmId | None = Field(None, description="vCenter managed object id (vm-1234) or UUID.")
    ip_address: IPvAnyAddress | None = None


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


class DiskSpaceLow(Event):
    """A file system that is running out of space."""

    mount_point: MountPoint = Field(description="An absolute path or a drive letter (C:).")
    used_percent: Annotated[float, Field(ge=0, le=100)]
    free_bytes: Annotated[int, Field(ge=0)]


class ServiceDown(Event):
    """A service that stopped and should be restarted."""

    service_name: ServiceName = Field(description="A systemd unit or a Windows service name.")
    platform: Literal["linux", "windows"]


class LoginBruteforce(Event):
    """Repeated failed logins from one address: block it."""

    source_ip: IPvAnyAddress
    username: Username | None = None
    failed_attempts: Annotated[int, Field(ge=1)]
    window_seconds: Annotated[int, Field(ge=1, le=7 * 24 * 3600)]
