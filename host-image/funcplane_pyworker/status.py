"""StatusResult and RpcException builders shared by every handler."""

from __future__ import annotations

import traceback

from funcplane_pyworker.protocol import pb


def success() -> pb.StatusResult:
    return pb.StatusResult(status=pb.StatusResult.Success)


def cancelled() -> pb.StatusResult:
    return pb.StatusResult(status=pb.StatusResult.Cancelled)


def rpc_exception(error: BaseException, *, context: str = "", user_code: bool = True) -> pb.RpcException:
    """Describe `error` for the host: "<context>: <Type>: <message>" plus the formatted stack."""
    description = f"{type(error).__name__}: {error}"
    return pb.RpcException(
        message=f"{context}: {description}" if context else description,
        stack_trace="".join(traceback.format_exception(error)),
        source=_source_of(error),
        is_user_exception=user_code,
        type=f"{type(error).__module__}.{type(error).__qualname__}",
    )


def failure(error: BaseException, *, context: str = "", user_code: bool = True) -> pb.StatusResult:
    exception = rpc_exception(error, context=context, user_code=user_code)
    return pb.StatusResult(
        status=pb.StatusResult.Failure, result=exception.message, exception=exception
    )


def _source_of(error: BaseException) -> str:
    """Where the error was raised (the deepest frame), as the exception's source."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return type(error).__module__
    deepest = frames[-1]
    return f"{deepest.filename}, line {deepest.lineno}, in {deepest.name}"
