"""The plain splitter (api/strict_multipart.py) agrees with python-multipart on every body it takes,
and declines the rest: generated forms, with their bytes mutated."""
from __future__ import annotations

from hypothesis import given, settings, strategies as st
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser

from api import forms, strict_multipart

# mostly what clients send, sometimes what they should not: the splitter must take the former
BOUNDARIES = [b"B"] * 3 + [b"----WebKitFormBoundary7MA4YWxkTrZu0gW", b"x'()+_,-./:=?y", b"a b", b"", b"b" * 71]
ODD_BYTES = [b"\r\n--B", b"\r\n--B\r\n", b"--B--", b'"', b"\\", b";", b"\r\n\r\n"]
TEXT = st.one_of(*[st.binary(max_size=40)] * 6, st.sampled_from(ODD_BYTES))
NAMES = [b"product_id", b"image_file", b"name", b"caf\xc3\xa9", b""] * 6 + [b"a;b", b'q"x', b"n*", b"a\\b"]
FILENAMES = [b"a.jpg", b"", b"caf\xc3\xa9.jpg"] * 4 + [b"C:\\x\\a.jpg", b'a"b']
TYPES = [b"image/jpeg", b"text/plain; charset=utf-8"] * 4 + [b" x", b"image/png "]


@st.composite
def bodies(draw) -> tuple[bytes, bytes]:
    boundary = draw(st.sampled_from(BOUNDARIES))
    out = []
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.sampled_from(NAMES))
        head = draw(st.sampled_from([b"Content-Disposition", b"content-disposition", b"CONTENT-DISPOSITION"]))
        line = head + b': form-data; name="' + name + b'"'
        if draw(st.booleans()):
            line += b'; filename="' + draw(st.sampled_from(FILENAMES)) + b'"'
        if draw(st.booleans()):
            line += b"\r\nContent-Type: " + draw(st.sampled_from(TYPES))
        out.append(b"--" + boundary + b"\r\n" + line + b"\r\n\r\n" + draw(TEXT) + b"\r\n")
    body = b"".join(out) + b"--" + boundary + b"--" + draw(st.sampled_from([b"\r\n", b"", b"epilogue"]))
    return boundary, body


def reference(body: bytes, boundary: bytes) -> forms.Form | None:
    """The form python-multipart reads (the path every body took before), or None on an error."""
    reading = forms._Parts("latin-1")
    try:
        parser = MultipartParser(boundary, reading.callbacks())
        parser.write(body)
        parser.finalize()
    except (FormParserError, forms._Refused):
        return None
    return reading.form


def plain(body: bytes, boundary: bytes) -> forms.Form | None:
    parts = strict_multipart.split(body, boundary)
    return None if parts is None else forms._plain(parts, "latin-1")


def check(boundary: bytes, body: bytes) -> None:
    taken = plain(body, boundary)
    if taken is not None:
        assert taken == reference(body, boundary), body


@settings(max_examples=600, deadline=None)
@given(bodies())
def test_generated_forms_read_the_same_both_ways(case):
    check(*case)


@settings(max_examples=600, deadline=None)
@given(bodies(), st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=4), st.floats(0.3, 1.0))
def test_mutated_forms_are_read_the_same_or_declined(case, flips, keep):
    boundary, body = case
    data = bytearray(body[: int(len(body) * keep)])
    for where, value in flips:
        if data:
            data[int(where * (len(data) - 1))] = value
    check(boundary, bytes(data))


def test_what_clients_send_is_taken_and_the_rest_declined():
    form = (b'--B\r\nContent-Disposition: form-data; name="product_id"\r\n\r\np1\r\n'
            b'--B\r\nContent-Disposition: form-data; name="image_file"; filename="a.jpg"\r\n'
            b"Content-Type: image/jpeg\r\n\r\n\xff\xd8\r\n--B--\r\n")
    assert strict_multipart.split(form, b"B") == [(b"product_id", None, b"p1"), (b"image_file", b"a.jpg", b"\xff\xd8")]
    assert plain(form, b"B") == reference(form, b"B")
    for declined in (form.replace(b"\r\n", b"\n"), b"preamble\r\n" + form, form[:-9],
                     form.replace(b"form-data", b"attachment"), form.replace(b"Content-Type", b"X-Extra"),
                     form.replace(b"\xff\xd8", b"\xff\r\n--Bx")):
        assert strict_multipart.split(declined, b"B") is None
