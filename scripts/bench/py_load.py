"""The seed pipelines' load: the Delta table into pandas, then DataFrame.to_sql into Postgres."""
import json
import os
import sys
import time

from deltalake import DeltaTable
from sqlalchemy import create_engine

table_path, url, target = sys.argv[1:4]
started = time.time()
df = DeltaTable(table_path).to_pandas()
schema, name = target.split(".", 1)
engine = create_engine(url.replace("postgres://", "postgresql+psycopg2://", 1))
df.to_sql(name, engine, schema=schema, if_exists="append", index=False, chunksize=10_000)
print(json.dumps({"records": len(df), "seconds": time.time() - started}))
sys.stdout.flush()
os._exit(0)  # deltalake may abort interpreter teardown (known upstream bug)
