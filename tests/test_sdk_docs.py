"""Every Python example in docs/sdk.md runs, as written but for the port, against a
demo gateway, prints something and exits 0."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

from tickwire.auth import KeyKind, create_key
from tickwire.server.auth_routes import AUTH_KEY

from .authkit import SECRET
from .harness import run_gateway

DOC = Path(__file__).resolve().parent.parent / "docs" / "sdk.md"


async def test_every_sdk_doc_example_runs(tmp_path: Path) -> None:
    examples = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(examples) >= 6
    async with run_gateway(demo=True, demo_rate=5, auth_secret=SECRET) as gw:
        made = await create_key(gw.runner.app[AUTH_KEY].store, kind=KeyKind.SECRET, user_id="alice")
        assert made.secret is not None
        env = {**os.environ, "TICKWIRE_SECRET": made.secret}

        async def run(n: int, code: str) -> tuple[int, int | None, str, str]:
            script = tmp_path / f"example{n}.py"
            script.write_text(code.replace("127.0.0.1:8080", f"127.0.0.1:{gw.port}"))
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(script),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
            )
            async with asyncio.timeout(60):
                out, err = await proc.communicate()
            return n, proc.returncode, out.decode(), err.decode()

        results = await asyncio.gather(*(run(n, code) for n, code in enumerate(examples)))
    failed = [r for r in results if r[1] != 0 or not r[2].strip()]
    assert not failed, "\n\n".join(
        f"example {n} ({rc}):\n{out}\n{err}" for n, rc, out, err in failed
    )
