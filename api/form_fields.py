"""A form's fields, declared once: each ``FormField`` gives its name, kind, limits and description,
from which ``FormSpec`` both reads a form (``api.forms``) and writes the form's OpenAPI schema.

Fields read as FastAPI's ``Form()`` and ``File()`` parameters took them: an empty value or a
browser's empty file input is missing; a file where text is due, or text where a file is due, is
a 422 naming the field, in FastAPI's words. Then each field's limits: ``max_length`` characters,
or a ``check`` of its own, which may also convert the value (a JSON object parsed).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from api.errors import ApiError
from api.forms import FilePart, Form

Value = str | bytes | None
Check = Callable[[Any, Any], Any]  # (value, the app's settings) -> the value to use, or ApiError


@dataclass(frozen=True)
class FormField:
    name: str
    description: str
    file: bool = False  # a file part, read as its bytes; else a text part
    required: bool = False
    default: str | None = None
    max_length: int | None = None  # in characters; documented, and checked unless ``check`` is given
    check: Check | None = None
    repeated: bool = False  # every value given, in order, as a list (empty ones left out); else the last

    def read(self, form: Form) -> Value | list[Value]:
        values = form.get(self.name) or []
        if self.repeated:
            return [self._one(v) for v in values if not _empty(v)]
        value = values[-1] if values else None
        if _empty(value):
            if self.required:
                raise ApiError(422, "invalid_field", f"{self.name}: Field required", self.name)
            return self.default
        return self._one(value)

    def _one(self, value: str | FilePart) -> Value:
        if self.file and not isinstance(value, FilePart):
            raise ApiError(422, "invalid_field",
                           f"{self.name}: Value error, Expected UploadFile, received: <class 'str'>", self.name)
        if not self.file and isinstance(value, FilePart):
            raise ApiError(422, "invalid_field", f"{self.name}: Input should be a valid string", self.name)
        return value.data if self.file else value

    def checked(self, value: Value | list[Value], settings) -> Any:
        if self.check is not None:
            return self.check(value, settings)
        for one in value if self.repeated else [value]:
            if self.max_length is not None and one is not None and len(one) > self.max_length:
                raise ApiError(422, "invalid_field",
                               f"{self.name} is {len(one)} characters; the limit is {self.max_length}", self.name)
        return value

    def schema(self) -> dict:
        kind = {"type": "string"} | ({"contentMediaType": "application/octet-stream"} if self.file else {})
        kind |= {"maxLength": self.max_length} if self.max_length is not None else {}
        title = {"title": self.name.replace("_", " ").title(), "description": self.description}
        if self.repeated:
            return {"type": "array", "items": kind} | title
        if self.required or self.default is not None:
            return kind | title | ({"default": self.default} if self.default is not None else {})
        return {"anyOf": [kind, {"type": "null"}]} | title


def _empty(value: str | FilePart | None) -> bool:
    """Missing: no value, an empty one, or a browser's empty file input."""
    return value is None or value == "" or (isinstance(value, FilePart) and value.empty_input)


@dataclass(frozen=True)
class FormSpec:
    title: str
    fields: tuple[FormField, ...]

    def read(self, form: Form) -> dict[str, Value]:
        """Every field's value, or the first field's 422, in the order of the fields."""
        return {field.name: field.read(form) for field in self.fields}

    def checked(self, values: dict[str, Value], settings) -> dict[str, Any]:
        """The values within their limits, as their checks convert them (the first refusal, in order)."""
        return {field.name: field.checked(values[field.name], settings) for field in self.fields}

    def openapi(self) -> dict:
        """The route's ``openapi_extra``: the form as its request body."""
        schema = {"title": self.title, "type": "object", "required": [f.name for f in self.fields if f.required],
                  "properties": {f.name: f.schema() for f in self.fields}}
        return {"requestBody": {"content": {"multipart/form-data": {"schema": schema}}, "required": True}}
