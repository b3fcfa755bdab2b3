"""Exact decimal numbers for prices and sizes: scaled integers, never floats.

A value travels as a decimal string (``"27000.50"``) and lives in memory as an integer
count of the smallest unit at the market's precision (``2700050`` at 2 places). Parsing
is strict: an optional ``-``, ASCII digits, an optional ``.`` and ASCII digits. No
exponents, no ``+``, no spaces, no ``NaN``/``Infinity``, no thousands separators.
"""

from __future__ import annotations

from dataclasses import dataclass

from tickwire.model.errors import TickwireError

#: Longest accepted decimal string; bounds the integers built from client input.
MAX_DECIMAL_LENGTH = 40
_DIGITS = frozenset("0123456789")


class DecimalError(TickwireError, ValueError):
    """A value that is not an acceptable decimal; ``code`` is stable."""


def parse_scaled(text: str, places: int) -> int:
    """Parse ``text`` into an integer count of ``10**-places`` units.

    Trailing zeros beyond ``places`` are accepted (``"1.500"`` at 2 places is 150);
    any non-zero digit beyond ``places`` raises ``wrong_precision``.
    """
    if not isinstance(text, str):
        raise DecimalError("not_a_number", f"expected a decimal string, got {type(text).__name__}")
    if not text or len(text) > MAX_DECIMAL_LENGTH:
        raise DecimalError(
            "not_a_number",
            f"expected a decimal string of 1 to {MAX_DECIMAL_LENGTH} characters",
        )
    body = text[1:] if text[0] == "-" else text
    whole, dot, frac = body.partition(".")
    if (
        not whole
        or not _DIGITS.issuperset(whole)
        or (dot and (not frac or not _DIGITS.issuperset(frac)))
    ):
        raise DecimalError("not_a_number", f"{text!r} is not a plain decimal number")
    if len(frac) > places:
        extra = frac[places:]
        if extra.strip("0"):
            raise DecimalError("wrong_precision", f"{text!r} has more than {places} decimal places")
        frac = frac[:places]
    units: int = int(whole) * 10**places + (int(frac.ljust(places, "0")) if places else 0)
    return -units if text[0] == "-" else units


def format_scaled(units: int, places: int) -> str:
    """Format an integer count of ``10**-places`` units with exactly ``places`` decimals."""
    if places == 0:
        return str(units)
    sign = "-" if units < 0 else ""
    whole, frac = divmod(-units if units < 0 else units, 10**places)
    return f"{sign}{whole}.{frac:0{places}d}"


@dataclass(frozen=True, slots=True)
class Increment:
    """A tick size such as ``"0.01"`` or ``"0.05"``: ``places`` decimals, ``step`` units."""

    text: str
    places: int
    step: int

    @classmethod
    def from_text(cls, text: str) -> Increment:
        """Parse an increment string; it must be a positive plain decimal."""
        places = len(text.partition(".")[2])
        try:
            step = parse_scaled(text, places)
        except DecimalError as exc:
            raise DecimalError("bad_increment", f"increment {text!r}: {exc.message}") from None
        if step <= 0:
            raise DecimalError("bad_increment", f"increment {text!r} must be positive")
        return cls(format_scaled(step, places), places, step)

    def parse(self, text: str) -> int:
        """Parse a value at this precision; it must be a whole multiple of the increment."""
        units = parse_scaled(text, self.places)
        if units % self.step:
            raise DecimalError(
                "wrong_precision", f"{text!r} is not a multiple of the increment {self.text}"
            )
        return units

    def format(self, units: int) -> str:
        """The decimal string of ``units`` with exactly :attr:`places` decimals."""
        return format_scaled(units, self.places)
