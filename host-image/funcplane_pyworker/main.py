"""Entry point: parse the host's arguments, connect, serve until told to stop."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Coroutine
from typing import Any

from funcplane_pyworker.dispatcher import Dispatcher
from funcplane_pyworker.logs import worker_logger
from funcplane_pyworker.options import OptionsError, WorkerOptions, parse_options


async def serve(options: WorkerOptions) -> int:
    return await Dispatcher(options).run()


def _run_loop(work: Coroutine[Any, Any, int]) -> int:
    """Run on uvloop where installed (as the host does): its loop costs less per message."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(work)
    return uvloop.run(work)


def main(argv: list[str] | None = None) -> int:
    try:
        options = parse_options(sys.argv[1:] if argv is None else argv)
    except OptionsError as error:
        print(f"funcplane_pyworker: {error}", file=sys.stderr)
        return 2
    # The worker's own warnings also go to stderr, which the host captures, in case the
    # stream itself is what is failing.
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setLevel(logging.WARNING)
    stderr.setFormatter(logging.Formatter("funcplane_pyworker %(levelname)s %(message)s"))
    worker_logger.addHandler(stderr)
    exit_code = _run_loop(serve(options))
    sys.stdout.flush()
    sys.stderr.flush()
    # Exit now rather than wait for threads of sync functions that ignored their cancellation;
    # the host is already done with this worker.
    os._exit(exit_code)
