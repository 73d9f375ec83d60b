"""Appends generated user-activity NDJSON files to a Delta table, one commit a file: the
10-million-row input of the cluster benchmark, written by another engine so that lakectl's
bronze and silver are not part of what is measured. Prints the row count.

    python events_to_delta.py TABLE_URI FILE..."""
import os
import sys

import deltalake
import pyarrow.json

table, files = sys.argv[1], sys.argv[2:]
rows = 0
for path in files:
    chunk = pyarrow.json.read_json(path)
    deltalake.write_deltalake(table, chunk, mode="append")
    rows += chunk.num_rows
print(rows)
sys.stdout.flush()
os._exit(0)  # deltalake may abort interpreter teardown (known upstream bug)
