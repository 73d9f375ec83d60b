//! The object-store factory and Delta tables on each kind of lake, S3 on the real moto server.

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use bytes::Bytes;
use datafusion::prelude::SessionContext;
use deltalake::protocol::SaveMode;
use lakehouse_core::storage::{write_with_txns, Upkeep};
use lakehouse_core::testing::{service_env, unique_name};
use lakehouse_core::{table_files, Lake, Layer, Pipeline};
use object_store::{ObjectStoreExt, PutPayload};

/// Tests that count commits or files: no auto compaction.
const NO_COMPACTION: Upkeep = Upkeep {
    checkpoint_interval: 10,
    compact_every: 0,
};

/// A lake on the moto server, configured the way users configure it: a pipeline file plus
/// the `AWS_*` environment that scripts/services.sh exports.
fn s3_lake(uri: &str) -> Option<Lake> {
    service_env("AWS_ENDPOINT_URL")?;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.toml");
    std::fs::write(&file, format!("name = \"t\"\n[lake]\nuri = \"{uri}\"\n")).unwrap();
    // The process env carries LAKECTL_LAKE_URI (which beats the file); this lake is the file's.
    let env = |v: &str| {
        (v != "LAKECTL_LAKE_URI")
            .then(|| std::env::var(v).ok())
            .flatten()
    };
    let pipeline = Pipeline::load(&file, &env, &[]).unwrap();
    assert_eq!(pipeline.lake.uri, uri);
    Some(pipeline.lake.open().unwrap())
}

async fn object_round_trip(lake: &Lake) {
    let path = lake.path("probe/hello.txt");
    lake.store()
        .put(&path, PutPayload::from_static(b"hello lake"))
        .await
        .unwrap();
    let got: Bytes = lake
        .store()
        .get(&path)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&got[..], b"hello lake");
}

async fn delta_round_trip(lake: &Lake) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("title", DataType::Utf8, true),
    ]));
    let batch = |ids: Vec<i64>, titles: Vec<Option<&str>>| {
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(StringArray::from(titles)),
            ],
        )
        .unwrap()
    };
    assert!(lake.load_table(Layer::Silver, "t").await.unwrap().is_none());
    let table = lake.table_or_new(Layer::Silver, "t").await.unwrap();
    let table = table
        .write(vec![batch(vec![1, 2], vec![Some("Dune"), None])])
        .await
        .unwrap();
    assert_eq!(table.version(), Some(0));
    // A second handle sees the first write and appends after it.
    let table = lake.table_or_new(Layer::Silver, "t").await.unwrap();
    table
        .write(vec![batch(vec![3], vec![Some("Émile")])])
        .with_save_mode(SaveMode::Append)
        .await
        .unwrap();

    let table = lake.load_table(Layer::Silver, "t").await.unwrap().unwrap();
    assert_eq!(table.version(), Some(1));
    let ctx = SessionContext::new();
    ctx.register_table("t", table.table_provider().await.unwrap())
        .unwrap();
    let rows = ctx
        .sql("SELECT id, coalesce(title, '<null>') AS title FROM t ORDER BY id")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let pretty = arrow::util::pretty::pretty_format_batches(&rows)
        .unwrap()
        .to_string();
    assert_eq!(
        pretty,
        "+----+--------+\n| id | title  |\n+----+--------+\n| 1  | Dune   |\n| 2  | <null> |\n| 3  | Émile  |\n+----+--------+"
    );
}

#[tokio::test]
async fn memory_lake_keeps_objects_and_tables_for_the_process() {
    let lake = Lake::open("memory://", &Default::default()).unwrap();
    object_round_trip(&lake).await;
    delta_round_trip(&lake).await;
}

#[tokio::test]
async fn file_lake_writes_under_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap(), &Default::default()).unwrap();
    object_round_trip(&lake).await;
    delta_round_trip(&lake).await;
    assert!(dir
        .path()
        .join("silver/t/_delta_log/00000000000000000001.json")
        .exists());
    assert!(dir.path().join("probe/hello.txt").exists());
}

#[tokio::test]
async fn s3_lake_on_the_moto_server() {
    let Some(lake) = s3_lake(&format!("s3://lake/{}", unique_name("storage"))) else {
        return;
    };
    lake.probe().await.unwrap();
    object_round_trip(&lake).await;
    delta_round_trip(&lake).await;
}

#[tokio::test]
async fn s3_probe_names_a_missing_bucket() {
    let Some(lake) = s3_lake("s3://no-such-bucket/x") else {
        return;
    };
    let err = lake.probe().await.unwrap_err();
    assert_eq!(err.fault(), lakehouse_core::Fault::External);
    assert!(err.to_string().contains("s3://no-such-bucket/x/"), "{err}");
}

/// A reader that keeps its tables between polls (as continuous jobs do) sees every commit a
/// writer makes, and its `txn` answers (from memory, from the commits since, or replayed
/// from the checkpoint after a long gap) equal a fresh handle's replay at every version.
#[tokio::test]
async fn a_polling_reader_follows_the_log_and_its_txn_versions() {
    let dir = tempfile::tempdir().unwrap();
    let uri = dir.path().to_str().unwrap();
    let (writer, reader) = (
        Lake::open(uri, &Default::default()).unwrap(),
        Lake::open(uri, &Default::default()).unwrap(),
    );
    let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
    let batch = |id: i64| {
        RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![id]))]).unwrap()
    };
    // Commit i carries txn "a" = i on even commits, "b" = 100 + i every third, nothing else.
    let txns = |i: i64| {
        let mut t = Vec::new();
        if i % 2 == 0 {
            t.push(("a".to_string(), i));
        }
        if i % 3 == 0 {
            t.push(("b".to_string(), 100 + i));
        }
        t
    };
    let apps = ["a", "b", "never"];
    let mut held = None;
    for i in 0..40_i64 {
        let table = writer.table_or_new(Layer::Silver, "t").await.unwrap();
        write_with_txns(
            table,
            vec![batch(i)],
            SaveMode::Append,
            txns(i),
            &[],
            NO_COMPACTION,
            None,
        )
        .await
        .unwrap();
        // Poll now and then, so the reader catches up over gaps of 1 to 20 commits.
        if !matches!(i, 0..=5 | 9 | 13 | 17 | 38 | 39) {
            continue;
        }
        let seen = reader.table_or_new(Layer::Silver, "t").await.unwrap();
        assert_eq!(
            seen.version(),
            Some(i as u64),
            "the reader sees the latest commit"
        );
        let fresh = Lake::open(uri, &Default::default()).unwrap();
        let replayed = fresh.table_or_new(Layer::Silver, "t").await.unwrap();
        for app in apps {
            let want = fresh.txn_version(&replayed, app).await.unwrap();
            assert_eq!(
                reader.txn_version(&seen, app).await.unwrap(),
                want,
                "{app} at {i}"
            );
            // Asked again: from memory, the same.
            assert_eq!(
                reader.txn_version(&seen, app).await.unwrap(),
                want,
                "{app} at {i}"
            );
        }
        // A snapshot held from an earlier poll still gets its own version's answers.
        if let Some((old, answers)) = &held {
            for (app, want) in apps.iter().zip(answers) {
                assert_eq!(&reader.txn_version(old, app).await.unwrap(), want);
            }
        }
        if i == 3 {
            let mut answers = Vec::new();
            for app in apps {
                answers.push(reader.txn_version(&seen, app).await.unwrap());
            }
            held = Some((seen, answers));
        }
    }
    let (old, _) = held.unwrap();
    assert_eq!(reader.txn_version(&old, "a").await.unwrap(), Some(2));
    assert_eq!(reader.txn_version(&old, "b").await.unwrap(), Some(103));
}

/// A key-like id that sorts at random (hex of a mixed counter), as a UUIDv4 does.
fn random_id(i: u64) -> String {
    let mix = |mut z: u64| {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    };
    format!("{:016x}{:016x}", mix(i), mix(i + (1 << 40)))
}

/// The value lookups answer "which rows hold these values?" on a multi-file table on S3: files
/// with and without bloom filters, ids in order and at random, files rewritten by OPTIMIZE, a
/// partition column in a compound probe. Every answer equals the rows a full read finds (no
/// value missed, none added), and lookups open only the files and row groups that may match.
#[tokio::test]
async fn a_lookup_finds_every_held_value_and_reads_only_what_may_hold_one() {
    use lakehouse_core::lookup::{bloom_writer_properties, rows_matching, FilterCache};
    use parquet::basic::Compression;
    use std::collections::BTreeSet;

    let Some(lake) = s3_lake(&format!("s3://lake/{}", unique_name("lookup"))) else {
        return;
    };
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, true),
        Field::new("n", DataType::Int64, false),
        Field::new("day", DataType::Utf8, false),
    ]));
    let rows = |ids: Vec<String>, first_n: i64, day: &str| {
        let count = ids.len();
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(ids)),
                Arc::new(Int64Array::from_iter_values(
                    first_n..first_n + count as i64,
                )),
                Arc::new(StringArray::from(vec![day; count])),
            ],
        )
        .unwrap()
    };
    let in_order = |from: u64| (from..from + 1000).map(|i| format!("k{i:07}")).collect();
    let at_random = |from: u64| (from..from + 1000).map(random_id).collect();
    let looked_up = ["id".to_string(), "n".to_string()];
    let write = |batch: RecordBatch, blooms: bool| {
        let lake = lake.clone();
        let looked_up = looked_up.clone();
        async move {
            let table = lake.table_or_new(Layer::Silver, "t").await.unwrap();
            let props = blooms.then(|| bloom_writer_properties(&looked_up, Compression::SNAPPY));
            write_with_txns(
                table,
                vec![batch],
                SaveMode::Append,
                Vec::new(),
                &["day".to_string()],
                NO_COMPACTION,
                props,
            )
            .await
            .unwrap();
        }
    };
    write(rows(in_order(0), 0, "d1"), true).await;
    write(rows(at_random(0), 1000, "d1"), true).await;
    write(rows(in_order(2000), 2000, "d2"), false).await;
    write(rows(in_order(3000), 3000, "d2"), true).await;
    // OPTIMIZE rewrites d1's two files and d2's two into one file each, with filters.
    let table = lake.table_or_new(Layer::Silver, "t").await.unwrap();
    let (_, metrics) = table
        .optimize()
        .with_writer_properties(bloom_writer_properties(&looked_up, Compression::SNAPPY))
        .await
        .unwrap();
    assert_eq!(metrics.num_files_removed, 4);
    write(rows(in_order(5000), 5000, "d1"), true).await;
    write(rows(at_random(6000), 6000, "d2"), false).await;
    let table = lake.table_or_new(Layer::Silver, "t").await.unwrap();

    // The truth: every row, by a full read through DataFusion.
    let ctx = SessionContext::new();
    ctx.register_table("t", table.table_provider().await.unwrap())
        .unwrap();
    let all = ctx
        .sql("SELECT id, n, day FROM t")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    // (id, n, day) of each row; DataFusion may hand strings over in another Arrow type.
    let triples = |batch: &RecordBatch| -> Vec<(String, i64, String)> {
        let column = |name: &str, t: &DataType| {
            arrow::compute::cast(batch.column_by_name(name).unwrap(), t).unwrap()
        };
        let (id, n, day) = (
            column("id", &DataType::Utf8),
            column("n", &DataType::Int64),
            column("day", &DataType::Utf8),
        );
        let (id, n, day) = (
            id.as_any().downcast_ref::<StringArray>().unwrap(),
            n.as_any().downcast_ref::<Int64Array>().unwrap(),
            day.as_any().downcast_ref::<StringArray>().unwrap(),
        );
        (0..batch.num_rows())
            .map(|r| {
                (
                    id.value(r).to_string(),
                    n.value(r),
                    day.value(r).to_string(),
                )
            })
            .collect()
    };
    let every_row: Vec<_> = all.iter().flat_map(triples).collect();
    assert_eq!(every_row.len(), 6000);
    let found_set = |batch: &RecordBatch| -> BTreeSet<_> { triples(batch).into_iter().collect() };
    let read: Vec<String> = ["id", "n", "day"].map(String::from).to_vec();
    let id_probe = |ids: Vec<Option<String>>| {
        let s = Arc::new(Schema::new(vec![Field::new("id", DataType::Utf8, true)]));
        RecordBatch::try_new(s, vec![Arc::new(StringArray::from(ids))]).unwrap()
    };

    // Every 7th held id (from every file), ids held nowhere (in order and at random), a NULL.
    let mut probe: Vec<Option<String>> = every_row
        .iter()
        .step_by(7)
        .map(|(id, _, _)| Some(id.clone()))
        .collect();
    probe.extend((9000..9300).map(|i| Some(format!("k{i:07}"))));
    probe.extend((20_000..20_300).map(|i| Some(random_id(i))));
    probe.push(None);
    let wanted: BTreeSet<_> = probe.iter().flatten().collect();
    let truth: BTreeSet<_> = every_row
        .iter()
        .filter(|(id, _, _)| wanted.contains(id))
        .cloned()
        .collect();
    let cache = Arc::new(FilterCache::default());
    let found = rows_matching(&table, &[id_probe(probe)], &read, &cache)
        .await
        .unwrap();
    assert_eq!(found.files, 4);
    assert_eq!(found_set(&found.rows), truth);
    assert_eq!(found.rows.num_rows(), truth.len(), "each row once");

    // A compound probe with the partition column: (n, day) pairs, half of them in the wrong day.
    let pairs: Vec<(i64, &str)> = (0..6000)
        .step_by(11)
        .map(|n| (n, if n % 2 == 0 { "d1" } else { "d2" }))
        .collect();
    let pair_schema = Arc::new(Schema::new(vec![
        Field::new("n", DataType::Int64, false),
        Field::new("day", DataType::Utf8, false),
    ]));
    let pair_probe = RecordBatch::try_new(
        pair_schema,
        vec![
            Arc::new(Int64Array::from_iter_values(pairs.iter().map(|p| p.0))),
            Arc::new(StringArray::from_iter_values(pairs.iter().map(|p| p.1))),
        ],
    )
    .unwrap();
    let truth: BTreeSet<_> = every_row
        .iter()
        .filter(|(_, n, day)| pairs.contains(&(*n, day.as_str())))
        .cloned()
        .collect();
    assert!(!truth.is_empty() && truth.len() < pairs.len());
    let found = rows_matching(&table, &[pair_probe], &read, &cache)
        .await
        .unwrap();
    assert_eq!(found_set(&found.rows), truth);

    // The newest ids in order: only the newest file's range holds them.
    let newest: Vec<Option<String>> = (5000..5100).map(|i| Some(format!("k{i:07}"))).collect();
    let found = rows_matching(&table, &[id_probe(newest)], &read, &cache)
        .await
        .unwrap();
    assert_eq!(found.rows.num_rows(), 100);
    assert_eq!(found.files_in_range, 1, "{found:?}");

    // Random ids held nowhere: the two files with random ids may hold them by their ranges; the
    // compacted one's filters rule them out, the one written without filters is read.
    let absent: Vec<Option<String>> = (30_000..30_020).map(|i| Some(random_id(i))).collect();
    let uncached = Arc::new(FilterCache::with_budget(0));
    let found = rows_matching(&table, &[id_probe(absent.clone())], &read, &uncached)
        .await
        .unwrap();
    assert_eq!(found.rows.num_rows(), 0);
    assert_eq!(found.files_in_range, 2, "{found:?}");
    assert_eq!(found.files_opened, 2, "{found:?}");
    assert_eq!(found.row_groups_read, 1, "{found:?}");
    assert!(uncached.is_empty(), "a budget of 0 bytes keeps nothing");

    // With the filters the earlier lookups cached, only the file without filters is opened;
    // the answers are the same.
    let found = rows_matching(&table, &[id_probe(absent)], &read, &cache)
        .await
        .unwrap();
    assert_eq!(found.rows.num_rows(), 0);
    assert_eq!(found.files_in_range, 2, "{found:?}");
    assert_eq!(found.files_opened, 1, "{found:?}");
    assert_eq!(found.row_groups_read, 1, "{found:?}");
    let sample: Vec<Option<String>> = every_row
        .iter()
        .step_by(13)
        .map(|(id, _, _)| Some(id.clone()))
        .collect();
    let wanted: BTreeSet<_> = sample.iter().flatten().collect();
    let truth: BTreeSet<_> = every_row
        .iter()
        .filter(|(id, _, _)| wanted.contains(id))
        .cloned()
        .collect();
    let found = rows_matching(&table, &[id_probe(sample)], &read, &cache)
        .await
        .unwrap();
    assert_eq!(found_set(&found.rows), truth);
    assert_eq!(found.rows.num_rows(), truth.len(), "each row once");
    assert_eq!(cache.len(), found.files);
}

/// Auto compaction: after every `compact_every`-th commit the small files of each partition
/// become one, with the writer's bloom filters; a reader of the table and a reader of its
/// commits (as silver reads bronze) each see every row once, and the `txn` stays.
#[tokio::test]
async fn auto_compaction_keeps_every_row_once_and_the_files_few() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap(), &Default::default()).unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("day", DataType::Utf8, false),
    ]));
    let upkeep = Upkeep {
        checkpoint_interval: 10,
        compact_every: 4,
    };
    let blooms = lakehouse_core::lookup::bloom_writer_properties(
        &["id".to_string()],
        parquet::basic::Compression::SNAPPY,
    );
    let commits = 10;
    for i in 0..commits {
        let ids: Vec<String> = (0..50).map(|j| format!("k{:05}", i * 50 + j)).collect();
        let days = vec![["d1", "d2"][i % 2]; ids.len()];
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(ids)),
                Arc::new(StringArray::from(days)),
            ],
        )
        .unwrap();
        let table = lake.table_or_new(Layer::Bronze, "t").await.unwrap();
        write_with_txns(
            table,
            vec![batch],
            SaveMode::Append,
            vec![("w".to_string(), i as i64)],
            &["day".to_string()],
            upkeep,
            Some(blooms.clone()),
        )
        .await
        .unwrap();
    }
    let table = lake.table_or_new(Layer::Bronze, "t").await.unwrap();
    let latest = table.version().unwrap() as i64;
    // Versions 4 and 8 were data commits, each followed by a compaction (5 and 9); 10 and 11
    // are data.
    assert_eq!(latest, commits as i64 + 1);
    let ids = |read: Vec<(table_files::DataFile, Vec<RecordBatch>)>| -> Vec<String> {
        let mut ids: Vec<String> = (read.iter().flat_map(|(_, batches)| batches))
            .flat_map(|b| {
                let id = b.column_by_name("id").unwrap();
                let id = arrow::compute::cast(id, &DataType::Utf8).unwrap();
                let id = id.as_any().downcast_ref::<StringArray>().unwrap().clone();
                id.iter()
                    .map(|v| v.unwrap().to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        ids.sort();
        ids
    };
    let every: Vec<String> = (0..commits * 50).map(|i| format!("k{i:05}")).collect();
    let live = table_files::live_since(&table, "t", None).await.unwrap();
    // Per day: the compacted file, and the files of the two commits since.
    assert_eq!(live.len(), 4, "{live:?}");
    assert_eq!(
        ids(table_files::read(&table, &live, None).await.unwrap()),
        every
    );
    let unlimited = table_files::UnitLimit {
        rows: u64::MAX,
        bytes: u64::MAX,
    };
    let (appended, to) = table_files::appended_since(&table, "t", -1, latest, unlimited)
        .await
        .unwrap();
    assert_eq!(to, latest);
    assert_eq!(appended.len(), commits, "one file a data commit");
    assert_eq!(
        ids(table_files::read(&table, &appended, None).await.unwrap()),
        every
    );
    assert_eq!(lake.txn_version(&table, "w").await.unwrap(), Some(9));
    // The compacted files kept the bloom filter on id.
    let compacted = (live.iter())
        .filter(|f| !appended.iter().any(|a| a.path == f.path))
        .collect::<Vec<_>>();
    assert_eq!(compacted.len(), 2);
    for file in compacted {
        let bytes = std::fs::read(dir.path().join("bronze/t").join(file.path.as_ref())).unwrap();
        let reader =
            parquet::file::serialized_reader::SerializedFileReader::new(Bytes::from(bytes))
                .unwrap();
        use parquet::file::reader::FileReader;
        let row_group = reader.metadata().row_group(0);
        let id = (0..row_group.num_columns())
            .find(|&c| row_group.column(c).column_path().string() == "id")
            .unwrap();
        assert!(row_group.column(id).bloom_filter_offset().is_some());
    }
}

/// A reader that upserts by key (the loader) follows a table by versions: it must get every
/// row added after the version it saw even when a compaction moved those rows into new files
/// (`dataChange: false`) before it read them. It got none of them.
/// Appends the numbers `n` as one commit to the window table `name`, without compaction.
async fn append_numbers(lake: &Lake, name: &str, n: std::ops::Range<i64>) {
    let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
    let batch =
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from_iter_values(n))]).unwrap();
    let table = lake.table_or_new(Layer::Window, name).await.unwrap();
    write_with_txns(
        table,
        vec![batch],
        SaveMode::Append,
        vec![],
        &[],
        NO_COMPACTION,
        None,
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_reader_one_compaction_behind_gets_every_row_added_since() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap(), &Default::default()).unwrap();
    let append = |n: std::ops::Range<i64>| append_numbers(&lake, "w", n);
    for i in 0..3 {
        append(i * 10..i * 10 + 10).await;
    }
    let seen = lake
        .table_or_new(Layer::Window, "w")
        .await
        .unwrap()
        .version()
        .unwrap() as i64;
    for i in 3..6 {
        append(i * 10..i * 10 + 10).await;
    }
    let table = lake.table_or_new(Layer::Window, "w").await.unwrap();
    let (compacted, metrics) = table.optimize().await.unwrap();
    assert_eq!(metrics.num_files_removed, 6, "every file into one");
    let ids =
        |read: Vec<(table_files::DataFile, Vec<RecordBatch>)>| -> std::collections::BTreeSet<i64> {
            read.iter()
                .flat_map(|(_, batches)| batches)
                .flat_map(|b| {
                    b.column(0)
                        .as_any()
                        .downcast_ref::<Int64Array>()
                        .unwrap()
                        .values()
                        .to_vec()
                })
                .collect()
        };
    let unseen = table_files::live_since(&compacted, "w", Some(seen))
        .await
        .unwrap();
    let got = ids(table_files::read(&compacted, &unseen, None).await.unwrap());
    assert!(
        (30..60).all(|id| got.contains(&id)),
        "rows 30..60 missing: {got:?}"
    );
    // A compaction of rows the reader had all seen brings it nothing new.
    let at = compacted.version().unwrap() as i64;
    append(60..70).await;
    let later = lake.table_or_new(Layer::Window, "w").await.unwrap();
    let unseen = table_files::live_since(&later, "w", Some(at))
        .await
        .unwrap();
    assert_eq!(
        ids(table_files::read(&later, &unseen, None).await.unwrap()),
        (60..70).collect()
    );
}

#[tokio::test]
async fn a_compaction_from_an_old_version_adds_no_row_twice() {
    // A writer's auto compaction and `lakectl optimize` started from the same version: delta-rs
    // lets both commit (two dataChange=false removes of one file are no conflict to it), and
    // the second added every row again — seen in a chaos run.
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap(), &Default::default()).unwrap();
    for i in 0..4 {
        append_numbers(&lake, "t", i * 10..i * 10 + 10).await;
    }
    let first = lake.load_table(Layer::Window, "t").await.unwrap().unwrap();
    let second = first.clone();
    let (_, metrics) = lakehouse_core::storage::compact(first, None, None)
        .await
        .unwrap();
    assert_eq!(metrics.num_files_removed, 4);
    let (table, _) = lakehouse_core::storage::compact(second, None, None)
        .await
        .unwrap();
    let rows: usize = table_files::read(
        &table,
        &table_files::live_since(&table, "t", None).await.unwrap(),
        None,
    )
    .await
    .unwrap()
    .iter()
    .flat_map(|(_, batches)| batches)
    .map(|b| b.num_rows())
    .sum();
    assert_eq!(rows, 40, "every row once after two compactions");

    // While one process holds the table's compaction claim, another's compaction is refused.
    let claim = lakehouse_core::lease::Lease::acquire_in(
        table.object_store(),
        object_store::path::Path::from("_lakectl_compaction"),
        "compaction",
    )
    .await
    .unwrap();
    let refused = lakehouse_core::storage::compact(table.clone(), None, None).await;
    assert!(
        matches!(&refused, Err(e) if e.to_string().contains("already running")),
        "{:?}",
        refused.map(|(_, m)| m)
    );
    claim.release().await;
}
