"""A validation corpus: hand-written edge cases, real readings, and seeded random mutations."""

from __future__ import annotations

import random

from sensor_pipeline.source.simulator import Simulator

EDGE_CASES = [
    "",
    "   ",
    "2020-02-17T11:12:58.765969 26.04 540.1 13.12 Montrose_Beach 758028",
    "2020-02-17T11:12:58 -5 0 20 A 1",
    "2020-02-17T11:12:58 40 4000 0.001 " + "B" * 64 + " 9223372036854775807",
    "2020-02-17T11:12:58 40 4000 0.001 " + "B" * 65 + " 9223372036854775807",
    "2020-02-17T11:12:58 26.04 540.1 13.12 Montrose_Beach 9223372036854775808",
    "2020-02-17T11:12:58 26.04 540.1 13.12 Montrose_Beach 00000000000000000001",
    "2020-02-30T11:12:58 1 1 1 X 1",
    "2020-02-17T24:00:00 1 1 1 X 1",
    "2020-02-17T23:59:60 1 1 1 X 1",
    "2020-13-01T00:00:00 1 1 1 X 1",
    "2020-02-17T11:12:58Z 1 1 1 X 1",
    "2020-02-17T11:12:58+14:00 1 1 1 X 1",
    "2020-02-17T11:12:58-03:30 1 1 1 X 1",
    "2020-02-17T11:12:58.1 1 1 1 X 1",
    "2020-02-17T11:12:58.1234567 1 1 1 X 1",
    "2020-02-17 11:12:58 1 1 1 X 1",
    "2020-02-17T11:12 1 1 1 X 1",
    "2099-01-01T00:00:00 1 1 1 X 1",
    "2020-02-17T11:12:58 NaN 1 1 X 1",
    "2020-02-17T11:12:58 Infinity 1 1 X 1",
    "2020-02-17T11:12:58 1e999 1 1 X 1",
    "2020-02-17T11:12:58 -1e999 1 1 X 1",
    "2020-02-17T11:12:58 1d 1 1 X 1",
    "2020-02-17T11:12:58 1f 1 1 X 1",
    "2020-02-17T11:12:58 0x10 1 1 X 1",
    "2020-02-17T11:12:58 1_0 1 1 X 1",
    "2020-02-17T11:12:58 ١٢ 1 1 X 1",
    "2020-02-17T11:12:58 +.5e-1 .5 5. X 1",
    "2020-02-17T11:12:58 . 1 1 X 1",
    "2020-02-17T11:12:58 -0 -0.0 1 X 1",
    "2020-02-17T11:12:58 1 1 0 X 1",
    "2020-02-17T11:12:58 1 1 -0.0 X 1",
    "2020-02-17T11:12:58 1 1 1 Ünïcode_Beach 1",
    "2020-02-17T11:12:58 1 1 1 X +1",
    "2020-02-17T11:12:58 1 1 1 X 1e3",
    "2020-02-17T11:12:58\u00a01 1 1 X 1",
    "\t2020-02-17T11:12:58\t1\t1\t1\tX\t1\t",
    "2020-02-17T11:12:58\x0b1 1 1 X 1\x0c",
    "2020-02-17T11:12:58 1 1 1 X 1\n",
]


def mutate(line: str, rng: random.Random) -> str:
    fields = line.split(" ")
    choice = rng.randrange(6)
    if choice == 0 and fields:
        fields.pop(rng.randrange(len(fields)))
    elif choice == 1:
        i = rng.randrange(len(fields))
        fields[i] = rng.choice(["", "-", "1e5", "-0.001", "40.0000001", "4000", "20", "0", "x", "١", "9" * 20])
    elif choice == 2:
        i = rng.randrange(len(line) or 1)
        return line[:i] + rng.choice(" \t.-:+eTZ0") + line[i + 1 :]
    elif choice == 3:
        fields.insert(rng.randrange(len(fields) + 1), rng.choice(["x", "1", "Z"]))
    elif choice == 4:
        fields[0] = rng.choice(["2021-06-31T00:00:00", "2021-06-30T00:00:00+25:00", "2021-06-30T00:00:00.000001Z"])
    return " ".join(fields)


def corpus(size: int = 1500, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    real = Simulator(mode="replay").take(300)
    simulated = Simulator(mode="simulate", seed=seed, fault_rate=0.3).take(300)
    mutated = [mutate(rng.choice(real + simulated), rng) for _ in range(size - 600 - len(EDGE_CASES))]
    return EDGE_CASES + real + simulated + mutated
