"""A synchronous wrapper for scripts and notebooks: the asyncio client runs on an event
loop in a background thread, and these calls wait for it.

>>> from tickwire.client import sync
>>> with sync.connect("ws://127.0.0.1:8080/ws") as client:  # doctest: +SKIP
...     for msg in client.subscribe("trades:BTC-USD", count=5):
...         print(msg)

Every name the asyncio API raises is raised here too.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

from tickwire.client.backoff import Backoff
from tickwire.client.book import LocalBook
from tickwire.client.connection import Client as AsyncClient
from tickwire.client.connection import EventHandler
from tickwire.client.connection import Subscription as AsyncSubscription
from tickwire.client.messages import Item, Message
from tickwire.model.publication import Position

T = TypeVar("T")


class _Loop:
    """An event loop running in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="tickwire", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except (KeyboardInterrupt, concurrent.futures.TimeoutError):
            future.cancel()
            raise

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        if not self.thread.is_alive():
            self.loop.close()


class Subscription:
    """Iterate it for the items of its channels (messages and events), as the asyncio
    :class:`~tickwire.client.Subscription`."""

    def __init__(self, client: Client, sub: AsyncSubscription, count: int | None) -> None:
        self._client = client
        self._sub = sub
        self._left = count

    def __iter__(self) -> Iterator[Item]:
        return self

    def __next__(self) -> Item:
        if self._left is not None and self._left <= 0:
            raise StopIteration
        try:
            item = self._client._loop.run(self._sub.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None
        if self._left is not None and isinstance(item, Message):
            self._left -= 1
        return item

    def next(self, timeout: float | None = None) -> Item:
        """The next item, waiting at most ``timeout`` seconds (``TimeoutError`` then)."""
        try:
            return self._client._loop.run(self._sub.__anext__(), timeout)
        except StopAsyncIteration:
            raise StopIteration from None

    def close(self) -> None:
        """Unsubscribe."""
        self._client._loop.run(self._sub.close())


class Client:
    """The synchronous face of :class:`tickwire.client.Client`; use :func:`connect`."""

    def __init__(self, client: AsyncClient, loop: _Loop) -> None:
        self._client = client
        self._loop = loop

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def stats(self) -> Any:
        """The asyncio client's :class:`~tickwire.client.ClientStats`."""
        return self._client.stats

    def subscribe(
        self,
        *channels: str,
        since: Mapping[str, Position | tuple[str, int]] | None = None,
        count: int | None = None,
    ) -> Subscription:
        """Subscribe now (raises :class:`~tickwire.client.Forbidden` etc. here); iterate
        the result. With ``count`` the iteration stops after that many messages."""

        async def start() -> AsyncSubscription:
            sub = self._client.subscribe(*channels, since=since)
            await sub.start()
            return sub

        return Subscription(self, self._loop.run(start()), count)

    def book(self, channel: str) -> LocalBook:
        """A copy of the :class:`~tickwire.client.LocalBook` of a held book channel, as
        of now (the live one belongs to the client's thread)."""

        async def copy() -> LocalBook:
            return self._client.book(channel).copy()

        return self._loop.run(copy())

    def close(self) -> None:
        """Close the connection and stop the background thread."""
        try:
            self._loop.run(self._client.close())
        finally:
            self._loop.stop()


def connect(
    url: str | Sequence[str],
    *,
    token: str | None = None,
    token_provider: Callable[[], str] | None = None,
    backoff: Backoff | None = None,
    on_event: EventHandler | None = None,
    **options: Any,
) -> Client:
    """Connect (as :func:`tickwire.connect`; the options are the same) and return a
    synchronous :class:`Client`. ``token_provider`` is a plain function here; it runs in
    a worker thread. ``on_event`` runs on the client's thread."""
    loop = _Loop()
    provider = None
    if token_provider is not None:
        plain = token_provider

        async def provider() -> str:
            return await asyncio.to_thread(plain)

    async def start() -> AsyncClient:
        client = AsyncClient(
            url,
            token=token,
            token_provider=provider,
            backoff=backoff,
            on_event=on_event,
            **options,
        )
        await client.start()
        return client

    try:
        return Client(loop.run(start()), loop)
    except BaseException:
        loop.stop()
        raise
