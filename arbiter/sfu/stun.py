"""STUN Binding messages for ICE-lite, sans-IO: bytes in, bytes or values out.

The codec itself is aioice's (`aioice.stun`); this module adds the checks ICE needs on top of
it, because `stun.parse_message` is permissive: it verifies FINGERPRINT only when present,
leaves MESSAGE-INTEGRITY to the caller, ignores the magic cookie and raises a zoo of
exceptions (ValueError, struct.error, UnicodeDecodeError, ...). Every `*_untrusted` function
here converts all of that into `MalformedInput`, so the media loop drops bad datagrams with one
`except`.

Server side (the SFU is an ICE-lite agent, RFC 8445 section 2.5): `read_username_untrusted`
routes a datagram from an unknown address to its transport, `parse_binding_request_untrusted`
authenticates it, `binding_success` / `binding_error` answer it. Client side (tests and a
benchmark that plays a browser): `build_binding_request`, `parse_binding_response_untrusted`.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from dataclasses import dataclass
from typing import Any

from aioice import stun

from arbiter.errors import MalformedInput

# RFC 5389 section 6: the 32-bit magic cookie that tells STUN from classic RFC 3489 STUN.
_COOKIE = struct.pack("!I", stun.COOKIE)
# Message type of a Binding request: method 0x001, class request (RFC 5389 section 6).
_BINDING_REQUEST = b"\x00\x01"
# FINGERPRINT attribute header (type 0x8028, length 4); it must be the last attribute
# (RFC 5389 section 15.5), so a message carrying it ends with these 4 bytes + the CRC.
_FINGERPRINT_HEADER = b"\x80\x28\x00\x04"
_FINGERPRINT_SIZE = 8
# ice-char = ALPHA / DIGIT / "+" / "/" (RFC 8445 section 5.3, via RFC 8839 section 5.4);
# ufrags are at most 256 characters.
_ICE_CHARS = re.compile(r"[A-Za-z0-9+/]{1,256}")
# RFC 5389 section 15.3: USERNAME is less than 513 bytes.
_MAX_USERNAME = 512
# The Role Conflict error code (RFC 8445 section 7.3.1.1).
ROLE_CONFLICT = 487

# What aioice's parser and packers raise on hostile input. UnicodeDecodeError is a ValueError.
_CODEC_ERRORS = (ValueError, struct.error, KeyError, IndexError, TypeError, OverflowError)


@dataclass(slots=True)
class BindingRequest:
    """An authenticated Binding request, as far as ICE-lite cares."""

    transaction_id: bytes
    local_ufrag: str  # ours: the first half of USERNAME (RFC 8445 section 7.2.2)
    remote_ufrag: str  # the sender's
    use_candidate: bool  # the controlling agent nominates this pair (RFC 8445 section 8.1.1)
    priority: int | None  # PRIORITY (RFC 8445 section 7.1.1), prflx priority of the sender
    controlling: bool | None  # True: ICE-CONTROLLING, False: ICE-CONTROLLED, None: neither


def is_stun(data: bytes) -> bool:
    """True when a datagram on the shared media port is STUN (RFC 7983 section 7: byte 0..3)."""
    return len(data) > 0 and data[0] <= 3


def _parse_untrusted(data: bytes) -> stun.Message:
    """Parse with aioice after the header checks it skips; only MalformedInput escapes."""
    if len(data) < stun.HEADER_LENGTH:
        raise MalformedInput("STUN message shorter than its 20-byte header")
    # RFC 5389 section 6: the two most significant bits are zero, the cookie is fixed and the
    # length (which excludes the header) is a multiple of 4 because attributes are padded.
    if data[0] & 0xC0 or data[4:8] != _COOKIE:
        raise MalformedInput("not a STUN message (type bits or magic cookie)")
    if len(data) % 4:
        raise MalformedInput("STUN message length is not a multiple of 4")
    try:
        # Also verifies FINGERPRINT when it is present.
        return stun.parse_message(data)
    except _CODEC_ERRORS as exc:
        raise MalformedInput(f"bad STUN message: {exc}") from None


def _ends_with_fingerprint(data: bytes) -> bool:
    """RFC 5389 section 15.5: FINGERPRINT is present, last, and its CRC-32 matches.

    aioice verifies a FINGERPRINT wherever it appears but accepts its absence; ICE requires it
    (RFC 8445 section 7.2.2), so check the trailing 8 bytes directly.
    """
    if len(data) < stun.HEADER_LENGTH + _FINGERPRINT_SIZE:
        return False
    if data[-_FINGERPRINT_SIZE:-4] != _FINGERPRINT_HEADER:
        return False
    (crc,) = struct.unpack("!I", data[-4:])
    return crc == stun.message_fingerprint(data[:-_FINGERPRINT_SIZE])


def _split_username_untrusted(message: stun.Message) -> tuple[str, str]:
    """USERNAME is "RECEIVER:SENDER" for ICE checks (RFC 8445 section 7.2.2)."""
    username = message.attributes.get("USERNAME")
    if username is None:
        raise MalformedInput("no USERNAME")
    if not isinstance(username, str) or len(username.encode()) > _MAX_USERNAME:
        raise MalformedInput("bad USERNAME")
    local, sep, remote = username.partition(":")
    if not sep or not _ICE_CHARS.fullmatch(local) or not _ICE_CHARS.fullmatch(remote):
        raise MalformedInput("bad USERNAME: want LOCAL:REMOTE ice-chars")
    return local, remote


def read_username_untrusted(data: bytes) -> tuple[str, str]:
    """First look at a STUN datagram: (local_ufrag, remote_ufrag) of a Binding request.

    Nothing is authenticated yet; the caller uses the local ufrag to find the transport whose
    ice-pwd then verifies the request with `parse_binding_request_untrusted`.
    """
    if data[:2] != _BINDING_REQUEST:
        raise MalformedInput("not a STUN Binding request")
    return _split_username_untrusted(_parse_untrusted(data))


def parse_binding_request_untrusted(data: bytes, local_pwd: str) -> BindingRequest:
    """Parse and authenticate a Binding request with our ice-pwd (short-term credentials)."""
    if data[:2] != _BINDING_REQUEST:
        raise MalformedInput("not a STUN Binding request")
    if not _ends_with_fingerprint(data):
        raise MalformedInput("missing or bad FINGERPRINT")
    message = _parse_untrusted(data)
    attrs = message.attributes
    # RFC 5389 section 10.1.2: a request without MESSAGE-INTEGRITY or with a wrong HMAC is
    # rejected (a full agent would answer 400/401; ICE-lite just drops it).
    if "MESSAGE-INTEGRITY" not in attrs:
        raise MalformedInput("missing MESSAGE-INTEGRITY")
    if not message.check_message_integrity(local_pwd.encode()):
        raise MalformedInput("bad MESSAGE-INTEGRITY")
    local, remote = _split_username_untrusted(message)
    controlling: bool | None = None
    if "ICE-CONTROLLING" in attrs:
        if "ICE-CONTROLLED" in attrs:
            raise MalformedInput("both ICE-CONTROLLING and ICE-CONTROLLED")
        controlling = True
    elif "ICE-CONTROLLED" in attrs:
        controlling = False
    priority = attrs.get("PRIORITY")
    return BindingRequest(
        transaction_id=message.transaction_id,
        local_ufrag=local,
        remote_ufrag=remote,
        use_candidate="USE-CANDIDATE" in attrs,
        priority=priority if isinstance(priority, int) else None,
        controlling=controlling,
    )


def _signed(message: stun.Message, pwd: str) -> bytes:
    # Short-term credentials: the HMAC key is the ice-pwd itself (RFC 5389 section 15.4);
    # add_message_integrity also appends FINGERPRINT (RFC 8445 section 7.2.2).
    message.add_message_integrity(pwd.encode())
    return bytes(message)


def binding_success(request: BindingRequest, addr: tuple[str, int], local_pwd: str) -> bytes:
    """Success response: the sender's address as seen by us, signed with our ice-pwd.

    XOR-MAPPED-ADDRESS is how a browser learns its peer-reflexive address (RFC 8445 7.3.1.3).
    """
    host, port = addr[0], addr[1]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"binding_success needs an IP address, not {host!r}") from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        # A dual-stack socket sees IPv4 peers as ::ffff:a.b.c.d; the browser knows itself by
        # its IPv4 address, so report that family (RFC 8489 14.2: the address as the client
        # would see it).
        host = str(ip.ipv4_mapped)
    response = stun.Message(
        message_method=stun.Method.BINDING,
        message_class=stun.Class.RESPONSE,
        transaction_id=request.transaction_id,
        attributes={"XOR-MAPPED-ADDRESS": (host, port)},
    )
    return _signed(response, local_pwd)


def binding_error(request: BindingRequest, code: int, reason: str, local_pwd: str) -> bytes:
    """Error response, e.g. 487 Role Conflict (RFC 8445 section 7.3.1.1), signed."""
    response = stun.Message(
        message_method=stun.Method.BINDING,
        message_class=stun.Class.ERROR,
        transaction_id=request.transaction_id,
        attributes={"ERROR-CODE": (code, reason)},
    )
    return _signed(response, local_pwd)


def build_binding_request(
    remote_ufrag: str,
    local_ufrag: str,
    remote_pwd: str,
    *,
    use_candidate: bool,
    controlling: bool,
    priority: int,
    tie_breaker: int,
    transaction_id: bytes | None = None,
) -> tuple[bytes, bytes]:
    """A connectivity check as a full agent sends it: (transaction_id, datagram).

    USERNAME is "RECEIVER:SENDER" and the HMAC key is the receiver's ice-pwd
    (RFC 8445 section 7.2.2); the tie-breaker rides in ICE-CONTROLLING/ICE-CONTROLLED
    (RFC 8445 section 7.1.3).
    """
    attributes: dict[str, Any] = {
        "USERNAME": f"{remote_ufrag}:{local_ufrag}",
        "PRIORITY": priority,
    }
    attributes["ICE-CONTROLLING" if controlling else "ICE-CONTROLLED"] = tie_breaker
    if use_candidate:
        attributes["USE-CANDIDATE"] = None
    request = stun.Message(
        message_method=stun.Method.BINDING,
        message_class=stun.Class.REQUEST,
        transaction_id=transaction_id,
        attributes=attributes,
    )
    return request.transaction_id, _signed(request, remote_pwd)


def parse_binding_response_untrusted(data: bytes, remote_pwd: str) -> tuple[bytes, tuple[str, int]]:
    """Check a Binding success response to our request: (transaction_id, mapped address)."""
    if data[:2] != b"\x01\x01":  # Binding method, success response class (RFC 5389 6)
        raise MalformedInput("not a STUN Binding success response")
    if not _ends_with_fingerprint(data):
        raise MalformedInput("missing or bad FINGERPRINT")
    message = _parse_untrusted(data)
    if "MESSAGE-INTEGRITY" not in message.attributes:
        raise MalformedInput("missing MESSAGE-INTEGRITY")
    # The responder signs with the same key as the request (RFC 5389 section 10.1.2).
    if not message.check_message_integrity(remote_pwd.encode()):
        raise MalformedInput("bad MESSAGE-INTEGRITY")
    mapped = message.attributes.get("XOR-MAPPED-ADDRESS")
    if not isinstance(mapped, tuple):
        raise MalformedInput("missing XOR-MAPPED-ADDRESS")
    return message.transaction_id, (str(mapped[0]), int(mapped[1]))
