"""The OTLP export child: encodes batches of span rows as protobuf and POSTs them.

`OtlpExporter` starts it as `python -S <this file>`: by path and without site-packages, so it
imports only the standard library and its two sibling modules (`_otlp_rows`, `_otlp_wire`), not
the `corral` package, and starts in a few tens of milliseconds. Frames both ways are a 4-byte
big-endian length and `marshal` data: the first frame in is the configuration, then each frame
in is a list of rows (`_otlp_rows.Row`) and each frame out answers it with
`(exported, failed, error, cpu_s)`. End of input: the child exits.
"""

from __future__ import annotations

import marshal
import struct
import sys
import time
from typing import IO, Any

_HEADER = struct.Struct(">I")


def read_frame(stream: IO[bytes]) -> Any:
    """The next frame's value, or None at end of input."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        return None
    return marshal.loads(data)


def write_frame(stream: IO[bytes], value: Any) -> None:
    """Send one frame."""
    data = marshal.dumps(value)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def main() -> None:
    from _otlp_rows import encode_request, encode_row, post  # type: ignore[import-not-found]

    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    config = read_frame(stdin)
    if config is None:
        return
    send = post(config["endpoint"], config["headers"], config["timeout_s"])
    resource = {"service.name": config["service_name"]}
    while (rows := read_frame(stdin)) is not None:
        started = time.process_time()
        try:
            send(encode_request(resource, "corral", [encode_row(row) for row in rows]))
            result: tuple[int, int, str] = (len(rows), 0, "")
        except Exception as exc:  # boundary: a failed export is reported; the child lives on
            result = (0, len(rows), repr(exc))
        write_frame(stdout, (*result, time.process_time() - started))


if __name__ == "__main__":
    main()
