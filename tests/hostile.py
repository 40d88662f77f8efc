"""Hostile raw lines: the edge cases of every field, and seeded random combinations of them.

Used by the parity test (Python and Spark rules must agree on every line) and by the fuzz suite
(every hostile record through the real job must be dead-lettered, none stored, the job unharmed).
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from sensor_pipeline.contract import rules

VALID = ("2020-02-17T11:12:58.765969", "26.04", "540.1", "13.12", "Montrose_Beach", "758028")

#: Edge values per field; most are invalid, some are valid values at a limit.
TIMESTAMPS = [
    "0000-01-01T00:00:00", "0001-01-01T00:00:00", "0001-01-01T00:00:00+01:00", "0001-01-01T00:59:59+01:00",
    "0001-01-01T00:00:00-01:00", "9999-12-31T23:59:59.999999", "9999-12-31T23:59:59-01:00",
    "9999-12-31T23:59:59+18:00", "10000-01-01T00:00:00", "-2020-01-01T00:00:00", "+2020-01-01T00:00:00",
    "1582-10-04T23:59:59", "1582-10-10T00:00:00", "1582-10-15T00:00:00", "1900-02-29T00:00:00",
    "2000-02-29T00:00:00", "2100-02-29T00:00:00", "2020-02-30T00:00:00", "2020-04-31T00:00:00",
    "2020-00-10T00:00:00", "2020-13-01T00:00:00", "2020-01-00T00:00:00", "2020-01-01T24:00:00",
    "2020-01-01T23:60:00", "2020-01-01T23:59:60", "2020-01-01T00:00:00Z", "2020-01-01T00:00:00z",
    "2020-01-01T00:00:00+18:00", "2020-01-01T00:00:00-18:00", "2020-01-01T00:00:00+18:01",
    "2020-01-01T00:00:00-18:30", "2020-01-01T00:00:00+23:59", "2020-01-01T00:00:00+24:00",
    "2020-01-01T00:00:00+00:60", "2020-01-01T00:00:00+0100", "2020-01-01T00:00:00+01", "2020-01-01T00:00:00 +01:00",
    "2020-01-01T00:00:00.", "2020-01-01T00:00:00.1", "2020-01-01T00:00:00.123456", "2020-01-01T00:00:00.1234567",
    "2020-01-01t00:00:00", "2020-01-01 00:00:00", "2020-01-01T00:00", "2020-01-01", "20200101T000000",
    "２０２０-01-01T00:00:00", "٢٠٢٠-01-01T00:00:00", "2020-01-01T00:00:00\u2028", "2020-01-01T00:00:00\x85",
    "2099-01-01T00:00:00", "2020-01-01T00:00:00+14:00", "1970-01-01T00:00:00", "1969-12-31T23:59:59.999999",
]  # fmt: skip
NUMBERS = [
    "0", "-0", "+0", "-0.0", "0.0e0", "1", "+1", "-1", "20", "20.0", "20.000000000000001", "19.999999999999999999",
    "40", "40.00000000000001", "-5", "-5.000000000000001", "4000", "4000.0000000001", "1e3", "1E3", "1e+3",
    "1e-3", ".5", "5.", ".", "+", "-", "e5", "1e", "1e+", "1.2.3", "1,5", "1_0", "0x10", "1d", "1f", "1L",
    "NaN", "nan", "-nan", "Infinity", "-Infinity", "inf", "1e308", "1.8e308", "-1e309", "1e-308", "4.9e-324",
    "2.4e-324", "1e-400", "1" + "0" * 400, "0." + "0" * 400 + "1", "0" * 300 + "1", "١٢", "１２", "1\u2028",
    "1\x85", "1\x00", "", "12\u0301", "𝟏𝟐",
]  # fmt: skip
BEACHES = [
    "A", "_", "__", "9", "B" * 64, "B" * 65, "Montrose-Beach", "Montrose.Beach", "Ünïcode_Beach", "Beach\u2028",
    "Beach\x85", "Beach\r", "Beach\x00", "Be\u200bach", "🏖️", "Beach$", "Beach\\", "'Beach'", '"Beach"',
    "<script>", "Beach;DROP", "ＡＢＣ", "K" * 1000,
]  # fmt: skip
IDS = [
    "1", "0", "-1", "+1", "01", "9223372036854775807", "9223372036854775808", "18446744073709551616",
    "0009223372036854775807", "0000000000000000001", "00000000000000000001", "1.0", "1e3", "١", "1\u2028",
    "1\x85", "1\r", "99999999999999999999", "-9223372036854775808", "0x1", "",
]  # fmt: skip
#: Separators: the ASCII whitespace the rules split on, and look-alikes they must not split on.
SEPARATORS = [" ", "\t", "  ", " \t ", "\x0b", "\x0c", "\r", "\n", "\xa0", "\u2003", "\u3000", "\u2028", "\u2029",
              "\x85", "\x1c", "\x1f", "\u200b", ",", ";", "|"]  # fmt: skip
LINES = [
    "", " ", "\n", "\x00", "\ufeff" + " ".join(VALID), " ".join(VALID) + "\ufeff", "\ufffd" * 6,
    " ".join(VALID) + " " + "x" * (rules.MAX_LINE_LENGTH - len(" ".join(VALID)) - 1),
    " ".join(VALID) + " " + "x" * (rules.MAX_LINE_LENGTH - len(" ".join(VALID))),
    " ".join(VALID[:4]) + " " + "B" * (rules.MAX_LINE_LENGTH - 60) + " 1",
    " ".join((*VALID[:5], "1" * 2000)), " ".join(VALID) * 2, "\t".join(VALID) + "\r\n",
]  # fmt: skip

FIELD_EDGES: dict[int, list[str]] = {
    0: TIMESTAMPS,
    1: NUMBERS,
    2: NUMBERS,
    3: NUMBERS,
    4: BEACHES,
    5: IDS,
}


def edge_lines() -> Iterator[str]:
    """Every edge value of every field in an otherwise valid line, every separator, and whole lines."""
    for index, values in FIELD_EDGES.items():
        for value in values:
            yield " ".join(value if i == index else field for i, field in enumerate(VALID))
    for separator in SEPARATORS:
        yield separator.join(VALID)
        yield separator + " ".join(VALID) + separator
    yield from LINES


def random_line(rng: random.Random) -> str:
    """A seeded combination: one to three fields replaced by edge values, odd separators, a cut or a splice."""
    fields = list(VALID)
    for index in rng.sample(range(6), rng.randint(1, 3)):
        fields[index] = rng.choice(FIELD_EDGES[index])
    separators = [rng.choice(SEPARATORS) if rng.random() < 0.2 else " " for _ in range(5)]
    line = fields[0] + "".join(s + f for s, f in zip(separators, fields[1:], strict=True))
    roll = rng.random()
    if roll < 0.05:
        line = line[: rng.randrange(len(line) + 1)]
    elif roll < 0.1:
        at = rng.randrange(len(line) + 1)
        line = line[:at] + rng.choice(LINES + SEPARATORS) + line[at:]
    elif roll < 0.12:
        line = line * rng.randint(2, 30)
    return line


def hostile_lines(count: int, seed: int = 1) -> list[str]:
    """``count`` lines: the edge lines first, then seeded random combinations."""
    rng = random.Random(seed)
    lines = list(edge_lines())[:count]
    lines.extend(random_line(rng) for _ in range(count - len(lines)))
    return lines


def invalid_lines(count: int, seed: int = 1) -> list[str]:
    """``count`` hostile lines that the rules reject (the fuzz suite's input)."""
    rng = random.Random(seed)
    lines = [line for line in edge_lines() if not rules.validate_line(line).valid][:count]
    while len(lines) < count:
        line = random_line(rng)
        if not rules.validate_line(line).valid:
            lines.append(line)
    return lines
