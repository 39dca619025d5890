"""Typed exceptions: every error a user can cause names what was wrong and where."""

from __future__ import annotations

from typing import Any


class GpuBacktestError(Exception):
    """Base class. ``code`` is a stable machine-readable name; ``details`` is JSON-able."""

    code = "error"
    status = 400

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        """The JSON error envelope's inner object."""
        return {"code": self.code, "message": self.message, "details": self.details}

    def __reduce__(self) -> tuple[Any, ...]:
        # subclasses take other constructor arguments: rebuild from the state, so an error
        # raised in a cluster task reaches the server as itself (code, message, details)
        return (_restore, (type(self), self.message, dict(self.__dict__)))


def _restore(cls: type[GpuBacktestError], message: str, state: dict[str, Any]) -> GpuBacktestError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    return err


class ConfigError(GpuBacktestError):
    """An environment variable has an invalid value."""

    code = "config_error"


class SpecError(GpuBacktestError):
    """A backtest spec is invalid; ``path`` names the field (e.g. ``params.fast``)."""

    code = "invalid_spec"
    status = 422

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}" if path else reason, {"field": path, "reason": reason})
        self.path = path
        self.reason = reason


class DataError(GpuBacktestError):
    """Market data is missing, unreadable or invalid; ``source`` names the file or symbol."""

    code = "invalid_data"
    status = 422

    def __init__(self, message: str, source: str | None = None, problems: list[Any] | None = None) -> None:
        super().__init__(message, {"source": source, "problems": problems or []})
        self.source = source
        self.problems = problems or []


class NotFoundError(GpuBacktestError):
    """A named thing (strategy, job, symbol, data source) does not exist."""

    code = "not_found"
    status = 404
