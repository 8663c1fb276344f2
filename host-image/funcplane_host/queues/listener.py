"""Queue triggers on Azure Queue Storage, with Azure's listener semantics.

One listener task per queueTrigger function, armed (like timers) once the host is ready and only
where non-HTTP triggers are on. Each poll fetches what the concurrency control allows (static:
`batchSize`, again once in-flight falls to `newBatchThreshold`; dynamic: the free part of the
learned limit, nothing while a host throttle is on). A fetched message stays hidden while its
function runs (its lease is renewed at half of `funcplane.queues.messageLease`), is deleted on
success, and on failure is made visible again after `visibilityTimeout`, or moved to
`<queue>-poison` once it has been dequeued `maxDequeueCount` times. An idle queue is polled with
randomized exponential back-off up to `maxPollingInterval`. A host that dies mid-batch deletes
nothing: its messages reappear when their lease runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass, field
from typing import Any, Protocol

from azure.core.exceptions import AzureError, ResourceNotFoundError

from funcplane_host.app.functions import FunctionDefinition
from funcplane_host.app.indexing import FunctionError
from funcplane_host.invocation import Invocation, InvocationFailed
from funcplane_protocol import FunctionRpc_pb2 as rpc
from funcplane_host.queues.storage import (
    QueueBindingError,
    QueueClients,
    connection_string_of,
    decode_message,
    encode_message,
    messages_from_output,
    queue_name_of,
    queue_outputs,
    trigger_metadata,
)
from funcplane_host.services import ExtensionServices, until_ready


class QueueAdmission(Protocol):
    """The concurrency control as a queue listener sees it."""

    @property
    def queue_lengths(self) -> dict[str, int]: ...
    def available(self, definition: FunctionDefinition, pending: int) -> int: ...


class QueueServices(ExtensionServices, Protocol):
    """What the queue triggers use of the host besides the shared services."""

    @property
    def concurrency(self) -> QueueAdmission: ...


logger = logging.getLogger("funcplane.host.queues")
QUEUE_TRIGGER = "queuetrigger"
MIN_POLLING_INTERVAL = 0.1
BACKLOG_REFRESH_SECONDS = 2.0
SLOT_WAIT_SECONDS = 0.5
STOP_SETTLE_SECONDS = 5.0  # with nothing available, re-check at least this often (limits move)


@dataclass
class QueueListener:
    definition: FunctionDefinition
    queue: str
    connection: str
    runs: int = 0
    failures: int = 0
    poisoned: int = 0
    in_flight: int = 0
    receives: int = 0  # receive calls issued (none while the host is throttled)
    fetched: int = 0  # messages those calls returned
    error: str | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    freed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def name(self) -> str:
        return self.definition.name

    def as_json(self) -> dict[str, Any]:
        return {"function": self.name, "queue": self.queue, "runs": self.runs, "failures": self.failures,
                "poisoned": self.poisoned, "inFlight": self.in_flight, "receives": self.receives,
                "fetched": self.fetched, "error": self.error}


class QueueTriggers:
    def __init__(self, host: QueueServices) -> None:
        self.host = host
        self.enabled = host.settings.non_http_triggers
        self.listeners: dict[str, QueueListener] = {}
        self.clients = QueueClients()
        self._task: asyncio.Task[None] | None = None
        self._work: set[asyncio.Task[Any]] = set()
        self._outputs: dict[str, list[dict[str, Any]]] = {}

    # ---- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._arm_when_ready())

    async def stop(self) -> None:
        """Stop polling, let finished messages be deleted; anything still running is left to its
        lease (the message reappears for another host)."""
        pollers = [t for t in (self._task, *(l.task for l in self.listeners.values())) if t is not None]
        for task in pollers:
            task.cancel()
        await asyncio.gather(*pollers, return_exceptions=True)
        if self._work:
            await asyncio.wait(set(self._work), timeout=STOP_SETTLE_SECONDS)
        for task in list(self._work):
            task.cancel()
        await asyncio.gather(*self._work, return_exceptions=True)
        await self.clients.close()

    async def _arm_when_ready(self) -> None:
        if not await until_ready(self.host):
            return
        environment = self.host.environment
        for definition in self.host.catalog.triggered_by(QUEUE_TRIGGER):
            try:
                queue = queue_name_of(definition.trigger, environment, definition.name)
                connection = connection_string_of(definition.trigger, environment, definition.name)
                for binding in self._outputs_of(definition):
                    queue_name_of(binding, environment, definition.name)
                    connection_string_of(binding, environment, definition.name)
            except QueueBindingError as error:
                self.host.catalog.record_error(FunctionError(definition.name, str(error), "trigger"))
                logger.error("queue trigger %s not started: %s", definition.name, error)
                continue
            self.listeners[definition.name] = QueueListener(definition, queue, connection)
        if not self.enabled:
            if self.listeners:
                logger.info("queue triggers %s not started: non-HTTP triggers are off in slot %r",
                            sorted(self.listeners), self.host.settings.slot_name)
            return
        loop = asyncio.get_running_loop()
        for listener in self.listeners.values():
            listener.task = loop.create_task(self._poll(listener), name=f"queue-{listener.name}")

    @staticmethod
    def _outputs_of(definition: FunctionDefinition) -> list[dict[str, Any]]:
        return [b for b in definition.bindings
                if str(b.get("type", "")).lower() == "queue" and b.get("direction") == "out"]

    # ---- polling -----------------------------------------------------------------------

    async def _poll(self, listener: QueueListener) -> None:
        options = self.host.config.scaling.queues
        concurrency = self.host.concurrency
        client = self.clients.get(listener.connection, listener.queue)
        lease = int(max(1, round(self.host.config.scaling.message_lease)))
        delay = MIN_POLLING_INTERVAL
        backlog_task = asyncio.get_running_loop().create_task(self._watch_backlog(listener, client))
        try:
            while not self.host.draining:
                available = concurrency.available(listener.definition, listener.in_flight)
                if available <= 0:
                    listener.freed.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(listener.freed.wait(), SLOT_WAIT_SECONDS)
                    continue
                listener.receives += 1
                try:
                    messages = [m async for m in client.receive_messages(
                        max_messages=min(available, 32), messages_per_page=min(available, 32),
                        visibility_timeout=lease)]
                    listener.fetched += len(messages)
                    listener.error = None
                except ResourceNotFoundError:
                    messages = []
                    listener.error = f"queue {listener.queue!r} does not exist yet"
                except AzureError as error:
                    messages = []
                    listener.error = f"receiving from {listener.queue!r} failed: {error}"
                    logger.warning("queue trigger %s: %s", listener.name, listener.error)
                if not messages:
                    # Randomized exponential back-off while the queue is empty (Azure's polling).
                    await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                    delay = min(delay * 2, options.max_polling_interval)
                    continue
                delay = MIN_POLLING_INTERVAL
                for message in messages:
                    listener.in_flight += 1
                    task = asyncio.get_running_loop().create_task(self._process(listener, client, message, lease))
                    self._work.add(task)
                    task.add_done_callback(self._work.discard)
        finally:
            backlog_task.cancel()

    async def _watch_backlog(self, listener: QueueListener, client: Any) -> None:
        while True:
            with contextlib.suppress(AzureError):
                properties = await client.get_queue_properties()
                self.host.concurrency.queue_lengths[listener.name] = properties.approximate_message_count
            await asyncio.sleep(BACKLOG_REFRESH_SECONDS)

    # ---- one message -------------------------------------------------------------------

    async def _process(self, listener: QueueListener, client: Any, message: Any, lease: int) -> None:
        options = self.host.config.scaling
        overrides = options.for_function(listener.name)
        max_dequeue = overrides.max_dequeue_count or options.queues.max_dequeue_count
        retry_after = overrides.visibility_timeout
        if retry_after is None:
            retry_after = options.queues.visibility_timeout
        receipt = _Receipt(message)
        renewal = asyncio.get_running_loop().create_task(self._renew(client, receipt, lease))
        holds_slot = True
        try:
            if (message.dequeue_count or 0) > max_dequeue:
                await self._poison(listener, client, receipt, "its dequeue count is past maxDequeueCount")
                return
            try:
                try:
                    await self._invoke(listener, message)
                finally:
                    # The function is done: its slot goes to the next message while this one is settled.
                    holds_slot = False
                    listener.in_flight -= 1
                    listener.freed.set()
            except InvocationFailed as failure:
                listener.failures += 1
                await receipt.stop_renewal(renewal)
                if (message.dequeue_count or 0) >= max_dequeue:
                    await self._poison(listener, client, receipt, f"it failed {message.dequeue_count} times: {failure}")
                else:
                    await client.update_message(message.id, receipt.pop_receipt, visibility_timeout=int(retry_after))
                return
            await receipt.stop_renewal(renewal)
            listener.runs += 1
            await client.delete_message(message.id, receipt.pop_receipt)
        except AzureError as error:
            # Leave it: the message reappears when its lease runs out and is tried again.
            logger.warning("queue trigger %s: message %s: %s", listener.name, message.id, error)
        finally:
            renewal.cancel()
            if holds_slot:
                listener.in_flight -= 1
                listener.freed.set()

    async def _invoke(self, listener: QueueListener, message: Any) -> None:
        encoding = self.host.config.scaling.queues.message_encoding
        body = decode_message(message.content, encoding)
        data = rpc.TypedData(string=body) if isinstance(body, str) else rpc.TypedData(bytes=body)
        binding = rpc.ParameterBinding(name=str(listener.definition.trigger["name"]), data=data)
        metadata = trigger_metadata(message)
        metadata["QueueTrigger"] = data

        def fill(_channel: Any, request: Any) -> None:
            request.input_data.append(binding)
            for key, value in metadata.items():
                request.trigger_metadata[key].CopyFrom(value)

        await self.host.invoke(Invocation(listener.definition, fill))

    async def send_outputs(self, definition: FunctionDefinition, response: Any) -> None:
        """Write what the invocation set on its queue output bindings ($return or named)."""
        outputs = self._outputs.get(definition.name)
        if outputs is None:
            outputs = self._outputs[definition.name] = self._outputs_of(definition)
        if not outputs:
            return
        encoding = self.host.config.scaling.queues.message_encoding
        environment = self.host.environment
        for binding, data in queue_outputs(response, outputs):
            try:
                messages = messages_from_output(data)
                client = await self.clients.ensure_exists(
                    connection_string_of(binding, environment, definition.name),
                    queue_name_of(binding, environment, definition.name))
                for text in messages:
                    await client.send_message(encode_message(text, encoding))
            except (QueueBindingError, ValueError, AzureError) as error:
                raise InvocationFailed(
                    500, f"function {definition.name!r}: queue output {binding['name']!r} failed: {error}") from None

    async def _poison(self, listener: QueueListener, client: Any, receipt: _Receipt, why: str) -> None:
        poison = await self.clients.ensure_exists(listener.connection, f"{listener.queue}-poison")
        await poison.send_message(receipt.message.content)
        await client.delete_message(receipt.message.id, receipt.pop_receipt)
        listener.poisoned += 1
        logger.error("queue trigger %s: message %s moved to %s-poison: %s",
                     listener.name, receipt.message.id, listener.queue, why)

    async def _renew(self, client: Any, receipt: _Receipt, lease: int) -> None:
        while True:
            await asyncio.sleep(lease / 2)
            async with receipt.lock:
                updated = await client.update_message(receipt.message.id, receipt.pop_receipt,
                                                      visibility_timeout=lease)
                receipt.pop_receipt = updated.pop_receipt

    def as_json(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "listeners": [l.as_json() for l in self.listeners.values()]}


class _Receipt:
    """A message and its latest pop receipt (each lease renewal issues a new one)."""

    def __init__(self, message: Any) -> None:
        self.message = message
        self.pop_receipt: str = message.pop_receipt
        self.lock = asyncio.Lock()

    async def stop_renewal(self, renewal: asyncio.Task[None]) -> None:
        # Not mid-update: a renewal the service applied but we never saw would orphan the receipt.
        async with self.lock:
            renewal.cancel()
