"""Draws the freshness curve of scripts/bench.sh: produce-to-Postgres lag (p50, p95, p99) per
rate. Input lines: rate|rows expected|produce_s|rows loaded|p50|p95|p99 ("null" where nothing
loaded)."""
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

source, out = sys.argv[1], sys.argv[2]
points = []
for line in open(source, encoding="utf-8"):
    rate, sent, produce_s, rows, *lags = line.strip().split("|")
    if "null" in lags:
        continue
    achieved = int(sent) / float(produce_s)
    kept_up = int(rows) == int(sent)
    points.append((achieved, [float(v) for v in lags], kept_up))

fig, ax = plt.subplots(figsize=(7, 4.2))
for i, label in enumerate(["p50", "p95", "p99"]):
    ax.plot([p[0] for p in points], [p[1][i] for p in points], marker="o", label=label)
for achieved, lags, kept_up in points:
    if not kept_up:
        ax.annotate("not kept up", (achieved, lags[2]), textcoords="offset points", xytext=(4, 6))
ax.axhline(2.0, color="grey", linestyle="--", linewidth=1, label="2 s")
ax.set_xscale("log")
ax.set_xlabel("records/s produced")
ax.set_ylabel("produce → row in Postgres, s")
ax.set_title("lakectl freshness: bronze, silver and load continuous (2 cores)")
ax.grid(True, which="both", alpha=0.3)
ax.legend()
fig.tight_layout()
fig.savefig(out, dpi=110)
