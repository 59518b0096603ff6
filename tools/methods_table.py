"""Prints evaluate's summary rows (its OUTPUT_TABLE as CSV), best RMSE first; σ-based columns are
empty where a method has none. Usage: methods_table.py COMPARISON.csv"""

import csv
import sys

NUMBERS = (
    ("rmse", 8, 2),
    ("mae", 8, 2),
    ("r2", 7, 2),
    ("bias", 8, 2),
    ("within_1_sigma", 7, 0),
    ("within_2_sigma", 7, 0),
    ("crps", 7, 2),
)


def main(path):
    with open(path, newline="") as file:
        rows = [row for row in csv.DictReader(file) if row["row"] == "summary"]
    print(f"{'method':<20}{'n':>5}{'RMSE':>8}{'MAE':>8}{'R²':>7}{'bias':>8}{'±1σ %':>7}{'±2σ %':>7}{'CRPS':>7}")
    for row in sorted(rows, key=lambda row: float(row["rmse"])):
        cells = "".join(
            f"{float(row[key]) if row[key] else float('nan'):>{width}.{digits}f}" for key, width, digits in NUMBERS
        )
        print(f"{row['method']:<20}{int(float(row['n'])):>5}{cells}")


if __name__ == "__main__":
    main(sys.argv[1])
