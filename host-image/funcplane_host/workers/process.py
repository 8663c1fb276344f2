"""Start a worker process with the command line Azure's host uses, and keep its last output lines."""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import signal
from pathlib import Path
from collections.abc import Mapping

from funcplane_host.workers.config import WorkerDescription, host_arguments

MAX_MESSAGE_LENGTH = 2**31 - 1  # Azure's default: int.MaxValue
_TAIL_LINES = 20


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "is still running"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with code {returncode}"


class WorkerProcess:
    def __init__(self, description: WorkerDescription, worker_id: str) -> None:
        self.description = description
        self.worker_id = worker_id
        self.process: asyncio.subprocess.Process | None = None
        self.tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
        self._pumps: list[asyncio.Task[None]] = []
        self._logger = logging.getLogger(f"funcplane.worker.{description.language}")

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    async def start(
        self, grpc_port: int, env: Mapping[str, str], runtime_version: str | None, cwd: Path
    ) -> None:
        argv = self.description.command(env, runtime_version)
        argv += host_arguments(
            self.description.host_arguments, grpc_port, self.worker_id, self.worker_id, MAX_MESSAGE_LENGTH
        )
        worker_env = dict(env)
        version = self.description.runtime_version(runtime_version)
        if version:
            worker_env.setdefault("FUNCTIONS_WORKER_RUNTIME_VERSION", version)
        worker_env.setdefault("FUNCTIONS_WORKER_RUNTIME", self.description.language)
        worker_env["FUNCTIONS_WORKER_DIRECTORY"] = str(self.description.directory)
        self._logger.info("starting worker %s: %s", self.worker_id, " ".join(argv))
        self.process = await asyncio.create_subprocess_exec(
            *argv,
            cwd=str(cwd),
            env=worker_env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # a signal to the host's group does not hit workers first
        )
        assert self.process.stdout and self.process.stderr
        self._pumps = [
            asyncio.create_task(self._pump(self.process.stdout)),
            asyncio.create_task(self._pump(self.process.stderr)),
        ]

    async def _pump(self, stream: asyncio.StreamReader) -> None:
        while True:
            line = await stream.readline()
            if not line:
                return
            text = line.decode("utf-8", "replace").rstrip()
            self.tail.append(text)
            self._logger.info("[%s] %s", self.worker_id, text)

    async def wait(self) -> int:
        assert self.process is not None
        code = await self.process.wait()
        # Let the pumps drain so the tail holds the last words of the process.
        if self._pumps:
            await asyncio.wait(self._pumps, timeout=1.0)
        return code

    def exit_summary(self) -> str:
        code = self.process.returncode if self.process else None
        summary = f"worker process {self.worker_id} (pid {self.pid}) {describe_exit(code)}"
        last = [line for line in self.tail if line.strip()]
        if code not in (None, 0) and last:
            summary += f"; last output: {last[-1][:300]}"
        return summary

    def kill(self) -> None:
        if self.process and self.process.returncode is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        if self.process and self.process.returncode is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
