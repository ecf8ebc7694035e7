"""The OTLP trace protobuf (opentelemetry-proto `trace.proto`), encoded by hand.

Only what Corral sends: an `ExportTraceServiceRequest` with one resource, one scope and spans
carrying attributes (string, bool, int, double, string arrays) and a status. Why not the
generated classes or the SDK's encoder: measured on this project's bench machine, building the
SDK's `ReadableSpan` and encoding it costs ~110 us per span, the generated classes ~60 us, these
few functions ~10 us; the export thread shares the GIL with the event loop, so that difference is
paid by every run. Tests decode the output with the generated classes.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence

__all__ = ["AttrValue", "encode_attributes", "encode_request", "encode_span"]

AttrValue = str | bool | int | float | Sequence[str]

# Field numbers from opentelemetry/proto/trace/v1/trace.proto and common.proto.
_LEN, _VARINT, _I64 = 2, 0, 1


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


_TAGS = {(f, w): _varint((f << 3) | w) for f in range(1, 17) for w in (_VARINT, _I64, _LEN)}
_SMALL = [_varint(n) for n in range(16384)]
"""Varints of small numbers (every length below 16 KiB), precomputed: the hot path."""
_KEYS: dict[str, bytes] = {}
"""Encoded `KeyValue.key` fields: attribute names repeat on every span."""


def _vi(n: int) -> bytes:
    return _SMALL[n] if n < 16384 else _varint(n)


def _len_field(field: int, data: bytes) -> bytes:
    return _TAGS[field, _LEN] + _vi(len(data)) + data


def _key(name: str) -> bytes:
    found = _KEYS.get(name)
    if found is None:
        found = _KEYS[name] = _len_field(1, name.encode())
    return found


def _any_value(value: AttrValue) -> bytes:
    if isinstance(value, str):
        return _len_field(1, value.encode())
    if isinstance(value, bool):
        return _TAGS[2, _VARINT] + (b"\x01" if value else b"\x00")
    if isinstance(value, int):
        return (
            _TAGS[3, _VARINT] + _vi(value)
            if 0 <= value < 16384
            else (_TAGS[3, _VARINT] + _varint(value & 0xFFFFFFFFFFFFFFFF))
        )
    if isinstance(value, float):
        return _TAGS[4, _I64] + struct.pack("<d", value)
    items = b"".join(_len_field(1, _len_field(1, str(v).encode())) for v in value)
    return _len_field(5, items)


_PAIRS: dict[tuple[int, str, type, AttrValue], bytes] = {}
"""Whole encoded attributes for short values that repeat from span to span (operation, agent,
model, provider, tier, status, small counts): most of a span's attributes are one dict lookup.
The value's type is part of the key (`True == 1` in Python, not on the wire)."""
_PAIRS_MAX = 4096


def encode_attributes(attrs: Mapping[str, AttrValue]) -> bytes:
    """A span's attributes, encoded; pass it to `encode_span` as `encoded` (for attributes that
    many spans share: encode them once)."""
    return _attributes(9, attrs)


def _attributes(field: int, attrs: Mapping[str, AttrValue]) -> bytes:
    tag = _TAGS[field, _LEN]
    out = []
    pairs = _PAIRS
    for key, value in attrs.items():
        kind = type(value)
        # Short strings, bools and small ints repeat from span to span: one lookup each.
        if (
            (kind is str and len(value) <= 64)  # type: ignore[arg-type]
            or kind is bool
            or (kind is int and 0 <= value < 1024)  # type: ignore[operator]
        ):
            ident = (field, key, kind, value)
            found = pairs.get(ident)
            if found is None:
                pair = _key(key) + _len_field(2, _any_value(value))
                found = tag + _vi(len(pair)) + pair
                if len(pairs) >= _PAIRS_MAX:
                    pairs.clear()
                pairs[ident] = found
            out.append(found)
        else:
            pair = _key(key) + _len_field(2, _any_value(value))
            out.append(tag + _vi(len(pair)) + pair)
    return b"".join(out)


def encode_span(
    *,
    trace_id: bytes,
    span_id: bytes,
    parent_span_id: bytes | None,
    name: str,
    kind: int,
    start_ns: int,
    end_ns: int,
    attributes: Mapping[str, AttrValue],
    status_code: int,
    status_message: str = "",
    encoded: bytes = b"",
) -> bytes:
    """One `Span` message. `kind`: 1 internal, 2 server, 3 client; `status_code`: 1 ok, 2 error.
    `encoded`: more attributes, already encoded by `encode_attributes`."""
    status = _TAGS[3, _VARINT] + _vi(status_code)
    if status_message:
        status = _len_field(2, status_message.encode()) + status
    return b"".join(
        (
            _len_field(1, trace_id),
            _len_field(2, span_id),
            _len_field(4, parent_span_id) if parent_span_id else b"",
            _len_field(5, name.encode()),
            _TAGS[6, _VARINT] + _vi(kind),
            _TAGS[7, _I64] + struct.pack("<Q", start_ns),
            _TAGS[8, _I64] + struct.pack("<Q", end_ns),
            encoded,
            _attributes(9, attributes),
            _len_field(15, status),
        )
    )


def encode_request(resource: Mapping[str, AttrValue], scope: str, spans: Sequence[bytes]) -> bytes:
    """An `ExportTraceServiceRequest` holding `spans` (encoded by `encode_span`)."""
    scope_spans = _len_field(1, _len_field(1, scope.encode())) + b"".join(
        _len_field(2, span) for span in spans
    )
    resource_spans = _len_field(1, _attributes(1, resource)) + _len_field(2, scope_spans)
    return _len_field(1, resource_spans)
