"""Writes a silver Delta table as CSV (header, lakectl's column order): psql \\copy's input."""
import os
import sys

import polars as pl

pl.read_delta(sys.argv[1]).write_csv(sys.argv[2])
os._exit(0)  # deltalake may abort interpreter teardown (known upstream bug)
