"""The one error shape of every endpoint: `{"code", "message"[, "fields"]}`, and the exception
handlers raise to produce it (shared by the shop, recipient and operator routes)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel


class ErrorOut(BaseModel):
    code: str
    message: str
    fields: list[str] | None = None


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, *,
                 fields: list[str] | None = None, headers: dict[str, str] | None = None,
                 extra: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.fields, self.headers = fields, headers
        self.extra = dict(extra or {})  # more fields of the body (e.g. attempts_left)


def error_response(status: int, code: str, message: str, fields: list[str] | None = None,
                   headers: Mapping[str, str] | None = None,
                   extra: Mapping[str, Any] | None = None) -> JSONResponse:
    body = ErrorOut(code=code, message=message, fields=fields).model_dump(exclude_none=True)
    body.update(extra or {})
    return JSONResponse(body, status_code=status, headers=headers)
