"""Writes N books-like CSV rows (~200 bytes as JSON) with unique titles: the benchmark input.
An optional third argument numbers the titles from there (records not in an earlier file)."""
import csv
import random
import sys

n, path = int(sys.argv[1]), sys.argv[2]
first = int(sys.argv[3]) if len(sys.argv) > 3 else 0
rng = random.Random(42)
genres = ["Fantasy", "Mystery", "Historical fiction", "Novella", "Romance", "Science fiction", ""]
languages = ["English", "French", "Spanish", "German", "Japanese", "Russian", "Portuguese"]
authors = [f"Author {i:04d} de la Fontaine-Smith" for i in range(5000)]
with open(path, "w", newline="", encoding="utf-8") as f:
    w = csv.writer(f)
    w.writerow(["Book", "Author(s)", "Original language", "First published",
                "Approximate sales in millions", "Genre"])
    for i in range(first, first + n):
        w.writerow([f"The Chronicles of Record {i:08d}: A Tale of Kafka, Delta and Many Rows",
                    rng.choice(authors), rng.choice(languages), rng.randint(1600, 2024),
                    round(rng.uniform(10, 200), 1), rng.choice(genres)])
