"""Every error a client, a publisher or an operator can be shown has one base,
:class:`TickwireError`, with a stable ``code`` and a ``message`` (issue 11)."""

from __future__ import annotations

import pytest

from tickwire.auth import AuthError
from tickwire.auth.keys import KeyStoreError, entitlements_from_json
from tickwire.dialects.errors import ProtocolError
from tickwire.engine import EngineError, EngineUnavailable
from tickwire.ingest.gateway import IngestError
from tickwire.model.book import BookError, OrderBook
from tickwire.model.candles import CandleError
from tickwire.model.channels import ChannelError, parse_channel
from tickwire.model.decimals import DecimalError, parse_scaled
from tickwire.model.errors import TickwireError
from tickwire.model.markets import MarketError, default_registry

CLASSES = [
    AuthError,
    BookError,
    CandleError,
    ChannelError,
    DecimalError,
    EngineError,
    EngineUnavailable,
    IngestError,
    KeyStoreError,
    MarketError,
    ProtocolError,
]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_client_visible_error_is_a_tickwire_error(cls: type[Exception]) -> None:
    assert issubclass(cls, TickwireError)


def test_raised_errors_carry_their_code_and_message() -> None:
    raised: list[TickwireError] = []
    for attempt in (
        lambda: parse_channel("nope:X"),
        lambda: parse_scaled("1.234", 2),
        lambda: default_registry().require("DOGE-USD"),
        lambda: OrderBook().apply([(100, 1)], [(99, 1)]),
        lambda: entitlements_from_json("all"),
    ):
        with pytest.raises(TickwireError) as info:
            attempt()
        raised.append(info.value)
    codes = [e.code for e in raised]
    assert codes == [
        "unknown_channel",
        "wrong_precision",
        "unknown_market",
        "crossed_book",
        "bad_entitlements",
    ]
    assert all(e.code and e.message and str(e) == e.message for e in raised)
    assert (EngineError("x").code, EngineUnavailable("y").code) == (
        "engine_error",
        "engine_unavailable",
    )
    assert IngestError("bad_price", "price …", field="price").field == "price"
