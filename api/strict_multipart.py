"""Split a plainly well-formed multipart body with a few ``bytes.find`` calls.

python-multipart walks part headers a byte at a time in Python, a tenth of an upload's CPU. The
bodies that HTTP clients and browsers send are much simpler than all the grammar allows, so
``split`` takes only those: a boundary of plain characters, CRLF line ends, every part with a
``Content-Disposition: form-data; name="..."`` header (and a ``filename="..."`` for files, an
optional ``Content-Type``) and no other header, a closing boundary. For such a body the parts are
those python-multipart finds (``tests/test_upload_form.py`` checks both agree). For anything else
it returns None and python-multipart reads the body, errors and all.
"""
from __future__ import annotations

import re

BOUNDARY = re.compile(rb"[0-9A-Za-z'()+_,\-./:=?]{1,70}")
HEADER = re.compile(rb"(?i:(content-disposition|content-type)): ([!-~\x80-\xff](?:[ -~\x80-\xff]*[!-~\x80-\xff])?)")
DISPOSITION = re.compile(rb'form-data; name="([^"\\;*]*)"(?:; filename="([^"\\;*]*)")?')
MAX_HEADERS_BYTES = 1024
MAX_PARTS = 1000

Part = tuple[bytes, "bytes | None", bytes]  # name, filename (None: a text field), data


def _headers(block: bytes) -> tuple[bytes, bytes | None] | None:
    """(name, filename) from a part's header block, or None if it is not plain."""
    disposition = None
    for line in block.split(b"\r\n"):
        header = HEADER.fullmatch(line)
        if header is None:
            return None
        if header.group(1).lower() == b"content-disposition":
            if disposition is not None:
                return None
            disposition = DISPOSITION.fullmatch(header.group(2))
            if disposition is None:
                return None
    if disposition is None:
        return None
    return disposition.group(1), disposition.group(2)


def split(body: bytes, boundary: bytes) -> list[Part] | None:
    """The parts of ``body`` in order, or None when it is not plainly well-formed."""
    if not BOUNDARY.fullmatch(boundary) or not body.startswith(b"--" + boundary + b"\r\n"):
        return None
    separator, pos, parts = b"\r\n--" + boundary, len(boundary) + 4, []
    while len(parts) < MAX_PARTS:
        head_end = body.find(b"\r\n\r\n", pos, pos + MAX_HEADERS_BYTES)
        if head_end <= pos or (names := _headers(body[pos:head_end])) is None:
            return None
        end = body.find(separator, head_end + 4)
        if end < 0:
            return None
        parts.append((*names, body[head_end + 4:end]))
        after = body[end + len(separator):end + len(separator) + 2]
        if after == b"--":
            return parts  # what follows the closing boundary is ignored, as python-multipart does
        if after != b"\r\n":
            return None
        pos = end + len(separator) + 2
    return None
