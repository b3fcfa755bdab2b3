"""The version lives in one place (``tickwire.__version__``) and ``tickwire --version``
prints it."""

from __future__ import annotations

import asyncio
import importlib.metadata
import re
import sys

import pytest

import tickwire
from tickwire.client.cli import main


def test_the_installed_metadata_carries_the_package_version() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+([.+-].+)?", tickwire.__version__)
    assert importlib.metadata.version("tickwire") == tickwire.__version__


def test_version_flag_prints_the_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"tickwire {tickwire.__version__}\n"


async def test_tickwire_version_as_a_process() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tickwire",
        "--version",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert (proc.returncode, out.decode(), err) == (0, f"tickwire {tickwire.__version__}\n", b"")
