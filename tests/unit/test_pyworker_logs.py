"""Python logging -> RpcLog in the worker: levels, categories, invocation ids, exceptions."""

from __future__ import annotations

import logging
import threading

import pytest

from funcplane_protocol import FunctionRpc_pb2 as pb
from funcplane_pyworker.context import thread_local_storage
from funcplane_pyworker.logs import RpcLogHandler, current_invocation_id, rpc_level


@pytest.fixture
def captured() -> list[pb.RpcLog]:
    sent: list[pb.RpcLog] = []
    handler = RpcLogHandler(lambda message: sent.append(message.rpc_log))
    logger = logging.getLogger("test_pyworker_logs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield sent
    logger.removeHandler(handler)


@pytest.mark.parametrize(
    "levelno, level",
    [
        (logging.CRITICAL, pb.RpcLog.Critical),
        (logging.ERROR, pb.RpcLog.Error),
        (logging.WARNING, pb.RpcLog.Warning),
        (logging.INFO, pb.RpcLog.Information),
        (logging.DEBUG, pb.RpcLog.Debug),
        (5, pb.RpcLog.Trace),
    ],
)
def test_levels(levelno: int, level: int) -> None:
    assert rpc_level(levelno) == level


def test_record_carries_category_message_and_the_current_invocation(captured: list[pb.RpcLog]) -> None:
    token = current_invocation_id.set("inv-7")
    try:
        logging.getLogger("test_pyworker_logs").info("hello %s", "there")
    finally:
        current_invocation_id.reset(token)
    (log,) = captured
    assert (log.invocation_id, log.category, log.message) == ("inv-7", "test_pyworker_logs", "hello there")
    assert log.level == pb.RpcLog.Information and log.log_category == pb.RpcLog.User


def test_user_threads_use_thread_local_storage(captured: list[pb.RpcLog]) -> None:
    def work() -> None:
        thread_local_storage.invocation_id = "inv-thread"
        logging.getLogger("test_pyworker_logs").warning("from a thread")

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert captured[0].invocation_id == "inv-thread"


def test_exceptions_are_attached(captured: list[pb.RpcLog]) -> None:
    try:
        raise KeyError("missing")
    except KeyError:
        logging.getLogger("test_pyworker_logs").exception("lookup failed")
    (log,) = captured
    assert log.level == pb.RpcLog.Error
    assert log.exception.message == "KeyError: 'missing'"
    assert "test_pyworker_logs.py" in log.exception.stack_trace
