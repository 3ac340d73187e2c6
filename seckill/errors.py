"""The errors the product answers with; the web layer renders them as the error envelope."""

from __future__ import annotations


class SeckillError(Exception):
    """A refusal the client should see: an HTTP status, a snake_case code and a sentence."""

    status = 400

    def __init__(self, code: str, message: str, *, status: int | None = None,
                 fields: dict[str, str] | None = None, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        if status is not None:
            self.status = status
        self.fields = fields
        self.retry_after = retry_after


class InvalidRequest(SeckillError):
    status = 400

    def __init__(self, message: str, fields: dict[str, str] | None = None) -> None:
        super().__init__("invalid_request", message, fields=fields)


class Unauthorized(SeckillError):
    status = 401

    def __init__(self, message: str = "A valid bearer token is required.") -> None:
        super().__init__("unauthorized", message)


class Forbidden(SeckillError):
    status = 403

    def __init__(self, message: str = "This action needs an operator token.") -> None:
        super().__init__("forbidden", message)


class NotFound(SeckillError):
    status = 404


class Conflict(SeckillError):
    status = 409


class Overloaded(SeckillError):
    status = 503

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__("overloaded", message, retry_after=retry_after)


def sale_not_found() -> NotFound:
    return NotFound("sale_not_found", "No sale has this id.")


def order_not_found() -> NotFound:
    return NotFound("order_not_found", "You have no order with this id.")
