"""Domain errors raised by services; one exception handler maps them to HTTP."""

from __future__ import annotations


class DomainError(Exception):
    status_code = 400

    def __init__(self, detail: str, errors: dict[str, list[str]] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or {}


class ValidationFailed(DomainError):
    """Input breaks a rule; `errors` maps each field path to its messages."""

    status_code = 400

    def __init__(self, errors: dict[str, list[str]], detail: str | None = None) -> None:
        if detail is None:
            first_field, messages = next(iter(errors.items()))
            detail = f"{first_field}: {messages[0]}" if first_field else messages[0]
        super().__init__(detail, errors)


class Conflict(DomainError):
    status_code = 409


class NotFound(DomainError):
    status_code = 404


class Forbidden(DomainError):
    status_code = 403


class Unauthenticated(DomainError):
    """No credentials, or credentials that name no active principal."""

    status_code = 401
