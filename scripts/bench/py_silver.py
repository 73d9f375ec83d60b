"""The books silver cleaning done with Polars on the same bronze Delta table: parse the JSON
values, trim, rename, normalise genres, keep the latest record per title, check the same
expectations, write Delta. Unlike lakectl it cannot quarantine single unparseable records
(one bad value fails json_decode for the whole column) and it is not incremental."""
import json
import os
import sys
import time
from datetime import datetime, timezone

import polars as pl

bronze, out = sys.argv[1:3]
started = time.time()
raw = pl.read_delta(bronze, columns=["value", "_partition", "_offset", "_kafka_ts"])
fields = pl.Struct({
    "Book": pl.String, "Author(s)": pl.String, "Original language": pl.String,
    "First published": pl.Int64, "Approximate sales in millions": pl.Float64, "Genre": pl.String,
})
parsed = raw.with_columns(pl.col("value").cast(pl.String).str.json_decode(fields).alias("r")).unnest("r")
genre = pl.col("Genre").str.strip_chars()
clean = parsed.select(
    pl.col("Book").str.strip_chars().alias("book_title"),
    pl.col("Author(s)").str.strip_chars().alias("authors"),
    pl.col("Original language").str.strip_chars().alias("original_language"),
    pl.col("First published").alias("first_published_year"),
    pl.col("Approximate sales in millions").cast(pl.Decimal(10, 2)).alias("sales_millions"),
    pl.when(genre == "").then(None)
    .otherwise(genre.str.slice(0, 1).str.to_uppercase() + genre.str.slice(1).str.to_lowercase())
    .alias("genre"),
    "_partition", "_offset", "_kafka_ts",
)
latest = (clean.filter(pl.col("book_title").is_not_null())
          .sort(["_kafka_ts", "_partition", "_offset"])
          .unique("book_title", keep="last"))
year = datetime.now(timezone.utc).year
passes = (pl.col("authors").is_not_null()
          & (pl.col("sales_millions").is_null() | (pl.col("sales_millions") >= 0))
          & (pl.col("first_published_year").is_null() | (pl.col("first_published_year") <= year)))
good = latest.filter(passes).with_columns(pl.lit(datetime.now(timezone.utc)).alias("_silver_ts"))
bad = latest.filter(~passes)
warned = latest.filter(~pl.col("original_language").str.contains("^[A-Z][a-z]+$")).height
good.write_delta(out, mode="overwrite")
if bad.height:
    bad.write_delta(out + "_quarantine", mode="overwrite")
print(json.dumps({"records": good.height, "quarantined": bad.height, "warned": warned,
                  "seconds": time.time() - started}))
sys.stdout.flush()
os._exit(0)  # deltalake may abort interpreter teardown (known upstream bug)
