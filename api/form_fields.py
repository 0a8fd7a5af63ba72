"""The upload's fields from its form, as FastAPI's ``Form()`` and ``File()`` parameters took them:
an empty value or a browser's empty file input is missing; a file where text is due, or text
where a file is due, is a 422 naming the field, in FastAPI's words."""
from __future__ import annotations

from api.errors import ApiError
from api.forms import FilePart, Form

REQUIRED = object()


def _missing(value) -> bool:
    return value is None or value == "" or (isinstance(value, FilePart) and value.empty_input)


def text_field(form: Form, name: str, default=REQUIRED) -> str | None:
    value = form.get(name)
    if _missing(value):
        if default is REQUIRED:
            raise ApiError(422, "invalid_field", f"{name}: Field required", name)
        return default
    if isinstance(value, FilePart):
        raise ApiError(422, "invalid_field", f"{name}: Input should be a valid string", name)
    return value


def file_field(form: Form, name: str) -> bytes | None:
    value = form.get(name)
    if _missing(value):
        return None
    if not isinstance(value, FilePart):
        raise ApiError(422, "invalid_field", f"{name}: Value error, Expected UploadFile, received: <class 'str'>",
                       name)
    return value.data

