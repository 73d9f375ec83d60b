//! The object-store factory and Delta tables on each kind of lake, S3 on the real moto server.

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use bytes::Bytes;
use datafusion::prelude::SessionContext;
use deltalake::protocol::SaveMode;
use lakehouse_core::testing::{service_env, unique_name};
use lakehouse_core::{Lake, Layer, Pipeline};
use object_store::{ObjectStoreExt, PutPayload};

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
    Some(Lake::from_config(&pipeline.lake).unwrap())
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
        lakehouse_core::storage::write_with_txns(
            table,
            vec![batch(i)],
            SaveMode::Append,
            txns(i),
            &[],
            10,
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
