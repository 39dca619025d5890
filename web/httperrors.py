"""The HTTP layer's own errors (each a `GpuBacktestError`: the error middleware answers it in the
JSON envelope with its status and code). Errors of the service layer live beside their code
(core/errors.py, core/jobstore.py, …)."""

from __future__ import annotations

from ..core.errors import GpuBacktestError


class BadRequest(GpuBacktestError):
    """A query parameter, header or body that is not well-formed."""

    code = "bad_request"
    status = 400


class RequestTimeout(GpuBacktestError):
    """The request body did not arrive in time (GPU_BACKTEST_BODY_TIMEOUT_S)."""

    code = "request_timeout"
    status = 408

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the request body did not arrive within {seconds:g} s (GPU_BACKTEST_BODY_TIMEOUT_S)",
                         {"timeout_s": seconds})


class Conflict(GpuBacktestError):
    """The job is not in a state that allows this (e.g. results before it succeeded)."""

    code = "conflict"
    status = 409


class PayloadTooLarge(GpuBacktestError):
    code = "payload_too_large"
    status = 413


class UnsupportedMediaType(GpuBacktestError):
    code = "unsupported_media_type"
    status = 415


class TooManyUploads(GpuBacktestError):
    """GPU_BACKTEST_MAX_CONCURRENT_UPLOADS uploads are already running (429 with Retry-After)."""

    code = "too_many_uploads"
    status = 429


class Unavailable(GpuBacktestError):
    """The server is shutting down."""

    code = "unavailable"
    status = 503


class InsufficientStorage(GpuBacktestError):
    """The disk (or quota) is full: nothing was stored."""

    code = "insufficient_storage"
    status = 507
