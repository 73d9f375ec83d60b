-- Cleaning for silver.books. Runs over the view `source`, whose columns are the fields of
-- [silver.books.schema], already typed. Keep one row per record: lakectl appends the lineage
-- columns (_bronze_version, _partition, _offset, _kafka_ts) and _silver_ts itself.
SELECT
    trim("Book")                    AS book_title,
    trim("Author(s)")               AS authors,
    trim("Original language")       AS original_language,
    "First published"               AS first_published_year,
    "Approximate sales in millions" AS sales_millions,
    -- Genres come in case variants ("Children's Literature", "Children's literature"):
    -- sentence case makes them one. A missing or blank genre is unknown: NULL.
    CASE
        WHEN trim("Genre") = '' THEN NULL
        ELSE upper(substr(trim("Genre"), 1, 1)) || lower(substr(trim("Genre"), 2))
    END                             AS genre
FROM source
