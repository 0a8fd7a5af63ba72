"""Read an upload's form in memory, straight off the request's body.

The body is read whole from ``receive`` (``api.limits.BodyLimits`` bounds its size and read
time first), then split: by ``api.strict_multipart`` when it is plainly well-formed, as clients
send it, else by python-multipart's parser. No temporary file, no hop to the thread pool, no
per-field model validation.

Forms read the way FastAPI and Starlette read them for this route before
(``tests/test_upload_form.py`` pins it): a part with a ``filename`` is a file, any other is
text, decoded with the body's charset (UTF-8 by default, Latin-1 when that fails); every value of
a repeated field is kept, in order (``api.form_fields`` takes the last one, unless the field is
``repeated``); only completed parts count; malformed multipart, a part without a name
or a text part over 1 MB get 400; a body that is not multipart goes to Starlette's parser.
"""
from __future__ import annotations

import codecs
from dataclasses import dataclass

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.exceptions import HTTPException
from starlette.requests import Request

from api import strict_multipart
from api.errors import ApiError

MAX_TEXT_PART = 1024 * 1024  # Starlette's bound on a text part
MAX_FILES = MAX_FIELDS = 1000
PARSE_ERROR = "There was an error parsing the body"


@dataclass(frozen=True)
class FilePart:
    filename: str
    data: bytes

    @property
    def empty_input(self) -> bool:
        """What a browser sends for a file input left empty: counts as no file."""
        return self.filename == "" and not self.data


Form = dict[str, "list[str | FilePart]"]  # each name's values, in the order sent


class _Refused(Exception):
    """A form Starlette would refuse with 400 and this message."""


def _decode(data: bytes, charset: str) -> str:
    try:
        return data.decode(charset)
    except (UnicodeDecodeError, LookupError):
        return data.decode("latin-1")


def _charset(params: dict[bytes, bytes]) -> str:
    try:
        return codecs.lookup(params.get(b"charset", b"utf-8").decode("latin-1")).name
    except LookupError:
        return "latin-1"


class _Parts:
    """python-multipart callbacks that collect the parts in memory, each name's in order."""

    def __init__(self, charset: str) -> None:
        self.charset = charset
        self.form: Form = {}
        self.files = self.fields = 0
        self.header_name, self.header_value = bytearray(), bytearray()
        self.disposition, self.name, self.filename = b"", "", None
        self.chunks: list[bytes] = []
        self.size = 0

    def callbacks(self) -> dict:
        return {"on_part_begin": self.on_part_begin, "on_part_data": self.on_part_data,
                "on_part_end": self.on_part_end, "on_header_field": self.on_header_field,
                "on_header_value": self.on_header_value, "on_header_end": self.on_header_end,
                "on_headers_finished": self.on_headers_finished}

    def on_part_begin(self) -> None:
        self.disposition, self.filename, self.chunks, self.size = b"", None, [], 0

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        if self.header_name.lower() == b"content-disposition":
            self.disposition = bytes(self.header_value)
        self.header_name, self.header_value = bytearray(), bytearray()

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.disposition)
        if b"name" not in options:
            raise _Refused('The Content-Disposition header field "name" must be provided.')
        self.name = _decode(options[b"name"], self.charset)
        if b"filename" in options:
            self.files += 1
            if self.files > MAX_FILES:
                raise _Refused(f"Too many files. Maximum number of files is {MAX_FILES}.")
            self.filename = _decode(options[b"filename"], self.charset)
        else:
            self.fields += 1
            if self.fields > MAX_FIELDS:
                raise _Refused(f"Too many fields. Maximum number of fields is {MAX_FIELDS}.")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        self.size += end - start
        if self.filename is None and self.size > MAX_TEXT_PART:
            raise _Refused(f"Part exceeded maximum size of {MAX_TEXT_PART // 1024}KB.")
        self.chunks.append(data[start:end])

    def on_part_end(self) -> None:
        data = b"".join(self.chunks)
        value = _decode(data, self.charset) if self.filename is None else FilePart(self.filename, data)
        self.form.setdefault(self.name, []).append(value)


async def _body(request: Request) -> bytes:
    chunks = []
    while True:
        message = await request.receive()
        if message["type"] != "http.request":  # the client went away
            raise ConnectionAbortedError("the client disconnected")
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _plain(parts: list[strict_multipart.Part], charset: str) -> Form | None:
    form: Form = {}
    for name, filename, data in parts:
        if filename is None and len(data) > MAX_TEXT_PART:
            return None  # python-multipart's reading says so
        key = _decode(name, charset)
        value = _decode(data, charset) if filename is None else FilePart(_decode(filename, charset), data)
        form.setdefault(key, []).append(value)
    return form


async def _parse_multipart(request: Request, params: dict[bytes, bytes]) -> Form:
    """The whole body first (bounded by BodyLimits), then the form: split plainly when it is
    plain, else by python-multipart. A broken body that stalls gets 408, not 400, whichever
    of its bytes had arrived: the answer no longer depends on how the network cut it up."""
    if b"boundary" not in params:
        raise _Refused("Missing boundary in multipart.")
    body, charset = await _body(request), _charset(params)
    if (parts := strict_multipart.split(body, params[b"boundary"])) is not None:
        if (form := _plain(parts, charset)) is not None:
            return form
    reading = _Parts(charset)
    try:
        parser = MultipartParser(params[b"boundary"], reading.callbacks())
        parser.write(body)
        parser.finalize()
    except FormParserError:
        raise _Refused("Invalid multipart data.") from None
    return reading.form


async def read_form(request: Request) -> Form:
    """The request's form; ``ApiError`` 400 when it cannot be read, as FastAPI answered."""
    media_type, params = parse_options_header(request.headers.get("content-type"))
    try:
        if media_type == b"multipart/form-data":
            return await _parse_multipart(request, params)
        form: Form = {}  # URL-encoded, or no form at all: {}
        for key, value in (await request.form()).multi_items():
            form.setdefault(key, []).append(value)
        return form
    except _Refused as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
    except HTTPException:
        raise
    except Exception:  # a body cut off (BodyLimits answers with its own 408 or 413 instead)
        raise ApiError(400, "bad_request", PARSE_ERROR) from None
