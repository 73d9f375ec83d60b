"""Draws RSS over time for the scaling runs of scripts/bench.sh at one input size.
Arguments: OUT.png RECORDS LABEL=SERIES...; each series file has "ms-since-start VmRSS-kB
VmHWM-kB" lines, sampled from /proc while the stage ran."""
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

out, records, *series = sys.argv[1:]
fig, ax = plt.subplots(figsize=(7, 4.2))
for arg in series:
    label, path = arg.split("=", 1)
    samples = [line.split() for line in open(path, encoding="utf-8") if line.strip()]
    seconds = [int(s[0]) / 1000 for s in samples]
    ax.plot(seconds, [int(s[1]) / 1024 for s in samples], label=f"{label} RSS")
    ax.plot(seconds, [int(s[2]) / 1024 for s in samples], linestyle=":", label=f"{label} peak so far")
ax.axhline(256, color="grey", linestyle="--", linewidth=1, label="256 MiB")
ax.set_xlabel("seconds since the stage started")
ax.set_ylabel("MiB")
ax.set_ylim(bottom=0)
ax.set_title(f"lakectl memory over time: {int(records):,} records (2 cores)")
ax.grid(True, alpha=0.3)
ax.legend()
fig.tight_layout()
fig.savefig(out, dpi=110)
