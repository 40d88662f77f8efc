"""Derive the packaged replay data set from the City of Chicago export.

    python scripts/derive_dataset.py <beach-water-quality-automated-sensors.csv>

Source: City of Chicago open data, "Beach Water Quality - Automated Sensors" (public domain terms of
the Chicago data portal). Kept: beach, timestamp, water temperature, turbidity, battery; sorted by
time then beach; empty placeholder rows dropped. Written to src/sensor_pipeline/data/readings.csv.gz.
"""

import csv
import gzip
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src" / "sensor_pipeline" / "data" / "readings.csv.gz"


def main(source: str) -> None:
    rows = []
    with open(source, newline="") as handle:
        for row in csv.DictReader(handle):
            values = (row["Water Temperature"], row["Turbidity"], row["Battery Life"])
            if not row["Measurement Timestamp"] or not all(values):
                continue
            rows.append((row["Measurement Timestamp"], row["Beach Name"], *values))
    rows.sort()
    with gzip.open(OUT, "wt", newline="", compresslevel=9) as out:
        writer = csv.writer(out)
        writer.writerow(["timestamp", "beach", "water_temperature", "turbidity", "battery"])
        writer.writerows(rows)
    print(f"{len(rows)} readings -> {OUT}")


if __name__ == "__main__":
    main(sys.argv[1])
