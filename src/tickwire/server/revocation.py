"""Revoked keys close their open connections on every node.

Each node polls its key store (``revoked_since``) every ``interval`` seconds and closes
the connections acting with a key revoked since it last looked, with close code 3504
``key revoked``. Polling the store rather than a notification channel: the key store is
where a revocation is written (``tickwire keys revoke`` talks to it alone, as may any SQL
tool), so no writer can forget to notify, and a node that was disconnected or restarting
when the key was revoked still sees it. Every node of a cluster shares one store
(PostgreSQL), so the revocation reaches all of them within one interval.

Revocation times come from the revoking machine's clock: the poll looks back ``skew``
seconds further than its last answer, so clocks within that of each other miss nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from tickwire.auth.keys import KeyStore

log = logging.getLogger(__name__)


async def watch_revocations(
    store: KeyStore,
    close: Callable[[set[str]], int],
    *,
    interval: float = 0.5,
    skew: float = 60.0,
    clock: Callable[[], float] = time.time,
) -> None:
    """Run until cancelled: every ``interval`` s, ``close`` the keys revoked lately."""
    since = clock()
    while True:
        await asyncio.sleep(interval)
        try:
            rows = await store.revoked_since(since - skew)
        except Exception as exc:  # the store may be briefly unreachable: try again
            log.warning("revocation poll failed: %s", type(exc).__name__)
            continue
        if not rows:
            continue
        since = max(since, *(at for _, at in rows))
        closed = close({name for name, _ in rows})
        if closed:
            log.info("closed %d connections of revoked keys (close 3504)", closed)
