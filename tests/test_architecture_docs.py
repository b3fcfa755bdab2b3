"""docs/architecture.md shows the connection state table exactly as the code has it."""

from __future__ import annotations

from pathlib import Path

from tickwire.dialects.core import TRANSITIONS

DOC = Path(__file__).resolve().parent.parent / "docs" / "architecture.md"


def test_the_documented_state_table_is_the_code_s() -> None:
    text = DOC.read_text()
    table = text.split("<!-- transitions:begin -->")[1].split("<!-- transitions:end -->")[0]
    rows = [
        tuple(cell.strip() for cell in line.strip().strip("|").split("|"))
        for line in table.strip().splitlines()[2:]
    ]
    expected = [(s.value, t.value, n.value) for (s, t), n in TRANSITIONS.items()]
    assert rows == expected
