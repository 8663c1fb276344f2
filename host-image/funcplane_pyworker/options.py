"""Command-line options the host passes when it starts the worker.

Two spellings exist in the wild and both are accepted:
``--host H --port P --workerId ID --requestId RID --grpcMaxMessageLength M`` and
``--functions-uri http://H:P/ --functions-worker-id ID --functions-request-id RID
--functions-grpc-max-message-length M``. When both are given, the newer one wins.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from urllib.parse import urlsplit


class OptionsError(ValueError):
    """The command line does not say how to reach the host."""


@dataclass(frozen=True)
class WorkerOptions:
    host: str
    port: int
    worker_id: str
    request_id: str
    max_message_length: int | None

    @property
    def target(self) -> str:
        """The gRPC target string of the host."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="funcplane_pyworker", description="funcplane Python language worker"
    )
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--workerId", dest="legacy_worker_id")
    parser.add_argument("--requestId", dest="legacy_request_id")
    parser.add_argument("--grpcMaxMessageLength", dest="legacy_max_length", type=int)
    parser.add_argument("--functions-uri", dest="functions_uri")
    parser.add_argument("--functions-worker-id", dest="worker_id")
    parser.add_argument("--functions-request-id", dest="request_id")
    parser.add_argument("--functions-grpc-max-message-length", dest="max_length", type=int)
    return parser


def parse_options(argv: list[str]) -> WorkerOptions:
    """Parse the worker's command line; unknown extra arguments are ignored (the host may add more)."""
    args, _unknown = _parser().parse_known_args(argv)
    host, port = args.host, args.port
    if args.functions_uri:
        parts = urlsplit(args.functions_uri)
        if not parts.hostname or parts.port is None:
            raise OptionsError(
                f"--functions-uri {args.functions_uri!r} must look like http://HOST:PORT/"
            )
        host, port = parts.hostname, parts.port
    if not host or port is None:
        raise OptionsError(
            "the host's address is missing: pass --host H --port P or --functions-uri http://H:P/"
        )
    worker_id = args.worker_id or args.legacy_worker_id
    if not worker_id:
        raise OptionsError("the worker id is missing: pass --workerId ID or --functions-worker-id ID")
    request_id = args.request_id or args.legacy_request_id or ""
    max_length = args.max_length if args.max_length is not None else args.legacy_max_length
    return WorkerOptions(
        host=host,
        port=port,
        worker_id=worker_id,
        request_id=request_id,
        max_message_length=max_length if max_length and max_length > 0 else None,
    )
