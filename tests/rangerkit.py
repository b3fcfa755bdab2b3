"""A ranger client, a test identity provider (Barong-style RS256 and EdDSA tokens) and a
book that applies ranger frames, shared by the ranger and RabbitMQ tests."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import jwt
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

PUBLIC = "/api/v2/ranger/public/"
PRIVATE = "/api/v2/ranger/private/"


class IdentityProvider:
    """Signs Barong-style session tokens with an RSA key (kid ``rs``) and an Ed25519 key
    (kid ``ed``); :meth:`jwks` writes the public keys as a JWKS file."""

    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ed = ed25519.Ed25519PrivateKey.generate()

    def jwks(self, directory: Path) -> str:
        keys = [
            {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.rsa.public_key())), "kid": "rs"},
            {**json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(self.ed.public_key())), "kid": "ed"},
        ]
        path = directory / f"jwks-{uuid.uuid4().hex[:8]}.json"
        path.write_text(json.dumps({"keys": keys}))
        return str(path)

    def claims(self, uid: str, **changes: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "uid": uid,
            "email": f"{uid}@barong.io",
            "role": "member",
            "level": 3,
            "state": "active",
            "sub": "session",
            "iss": "barong",
            "aud": ["peatio", "barong"],
            "iat": now,
            "exp": now + 3600,
            "jti": uuid.uuid4().hex,
        }
        claims.update(changes)
        return {k: v for k, v in claims.items() if v is not None}

    def token(self, uid: str, alg: str = "RS256", **changes: Any) -> str:
        if alg == "RS256":
            return jwt.encode(self.claims(uid, **changes), self.rsa, "RS256", {"kid": "rs"})
        return jwt.encode(self.claims(uid, **changes), self.ed, "EdDSA", {"kid": "ed"})


class RangerClient:
    """A plain WebSocket client speaking ranger."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    @classmethod
    async def connect(
        cls,
        session: aiohttp.ClientSession,
        base: str,
        path: str = PUBLIC,
        streams: list[str] | None = None,
        token: str | None = None,
    ) -> RangerClient:
        query = "".join(("&" if i else "?") + f"stream={s}" for i, s in enumerate(streams or []))
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        ws = await session.ws_connect(base + path + query, headers=headers, autoclose=False)
        return cls(ws)

    async def send(self, msg: Any) -> None:
        await self.ws.send_str(msg if isinstance(msg, str) else json.dumps(msg))

    async def recv_raw(self) -> str:
        msg = await self.ws.receive(timeout=5)
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise AssertionError(f"expected a text frame, got {msg.type} {msg.data!r}")
        text: str = msg.data
        return text

    async def recv(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(await self.recv_raw())
        return data

    async def recv_key(self, *keys: str) -> dict[str, Any]:
        """The next message keyed by one of ``keys``, skipping the others."""
        for _ in range(1000):
            msg = await self.recv()
            if set(msg) & set(keys):
                return msg
        raise AssertionError(f"no message keyed {keys}")

    async def close(self) -> None:
        await self.ws.close()


@dataclass
class RangerBook:
    """A book kept from ``ob-snap`` and ``ob-inc`` frames, checking ``sequence``."""

    bids: dict[Decimal, str] = field(default_factory=dict)
    asks: dict[Decimal, str] = field(default_factory=dict)
    sequence: int | None = None

    def snapshot(self, body: dict[str, Any]) -> None:
        self.bids = {Decimal(p): a for p, a in body["bids"]}
        self.asks = {Decimal(p): a for p, a in body["asks"]}
        self.sequence = body["sequence"]

    def increment(self, body: dict[str, Any]) -> None:
        assert self.sequence is not None, "ob-inc before ob-snap"
        assert body["sequence"] == self.sequence + 1, (self.sequence, body)
        self.sequence = body["sequence"]
        for name, side in (("bids", self.bids), ("asks", self.asks)):
            levels = body.get(name)
            if levels is None:
                continue
            rows = levels if isinstance(levels[0], list) else [levels]
            for price, amount in rows:
                if not amount or Decimal(amount) == 0:
                    side.pop(Decimal(price), None)
                else:
                    side[Decimal(price)] = amount

    def rows(self) -> tuple[list[list[str]], list[list[str]]]:
        bids = [[str(p), a] for p, a in sorted(self.bids.items(), reverse=True)]
        asks = [[str(p), a] for p, a in sorted(self.asks.items())]
        return bids, asks
