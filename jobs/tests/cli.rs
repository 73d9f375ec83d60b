//! The command-line surface: help, config errors, `validate` against the real services.

use crate::util::*;

#[test]
fn help_explains_the_commands_and_exit_codes() {
    let out = run(lakectl().arg("--help"));
    assert_eq!(out.code, 0);
    for needle in ["validate", "run", "status", "LAKECTL_PIPELINE", "69", "70"] {
        assert!(
            out.stdout.contains(needle),
            "--help lacks {needle:?}:\n{}",
            out.stdout
        );
    }
    let out = run(lakectl().args(["run", "--help"]));
    for stage in ["bronze", "silver", "gold", "load"] {
        assert!(out.stdout.contains(stage), "run --help lacks {stage}");
    }
}

#[test]
fn a_missing_pipeline_is_a_user_error() {
    let out = run(lakectl().arg("status"));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("LAKECTL_PIPELINE"), "{}", out.stderr);
}

#[test]
fn a_config_error_exits_2_and_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "name = \"x\"\n[kafka]\nbrokerz = \"a\"\n").unwrap();
    let out = run(lakectl().arg("validate").arg(&file));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("bad.toml:3:"), "{}", out.stderr);
    assert!(out.stderr.contains("brokerz"), "{}", out.stderr);
}

#[test]
fn validate_passes_with_every_service_up() {
    if !services_up() {
        return;
    }
    let out = run(lakectl().arg("validate").arg(books_pipeline()));
    assert_eq!(
        out.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    assert_eq!(out.stdout.matches("  ok ").count(), 3, "{}", out.stdout);
    assert!(out.stdout.contains("every service answers"));
}

/// Each service down in turn: exit 69 and the message names that service and only it.
#[test]
fn validate_names_the_service_that_is_down() {
    if !services_up() {
        return;
    }
    let dead = free_port();
    let cases = [
        (
            "LAKECTL_KAFKA_BROKERS",
            format!("127.0.0.1:{dead}"),
            "kafka",
        ),
        (
            "DATABASE_URL",
            format!("postgres://postgres@127.0.0.1:{dead}/lakectl"),
            "postgres",
        ),
        (
            "AWS_ENDPOINT_URL",
            format!("http://127.0.0.1:{dead}"),
            "lake s3://",
        ),
    ];
    for (var, value, service) in cases {
        let out = run(lakectl()
            .arg("validate")
            .arg(books_pipeline())
            .env(var, &value)
            .env("AWS_MAX_ATTEMPTS", "1"));
        assert_eq!(
            out.code, 69,
            "{var}: stdout:\n{}\nstderr:\n{}",
            out.stdout, out.stderr
        );
        let failed: Vec<&str> = out.stdout.lines().filter(|l| l.contains("FAIL")).collect();
        assert_eq!(failed.len(), 1, "{var}: {}", out.stdout);
        assert!(failed[0].contains(service), "{var}: {}", failed[0]);
        assert!(out.stderr.contains(service), "{var}: {}", out.stderr);
    }
}

/// Secrets in every place lakectl reads them (the S3 secret key, the Postgres URL's password,
/// the Kafka SASL password) never show in any output, at debug level, in JSON logs.
#[test]
fn no_output_shows_a_secret() {
    let Some(t) = TestPipeline::books() else {
        return;
    };
    const S3: &str = "s3-secret-7f3a9c";
    const PG: &str = "pg-password-91c2e4";
    const SASL: &str = "sasl-password-5d0e77";
    // moto takes any secret key and the test cluster trusts any password.
    let url = service_env("DATABASE_URL").unwrap();
    let t = t
        .with_env("AWS_SECRET_ACCESS_KEY", S3)
        .with_env(
            "DATABASE_URL",
            url.replacen("postgres@", &format!("postgres:{PG}@"), 1),
        )
        .with_env("LAKECTL_KAFKA_SASL_PASSWORD", SASL);
    let mut output = String::new();
    let mut lakectl = |args: &[&str]| {
        let out = run(t.lakectl().args(["-v", "--log-format", "json"]).args(args));
        output.push_str(&out.stdout);
        output.push_str(&out.stderr);
        out
    };
    for args in [
        &["validate"][..],
        &["produce"],
        &["run", "bronze", "--once"],
        &["run", "silver"],
        &["run", "gold"],
        &["run", "load"],
        &["status"],
    ] {
        let out = lakectl(args);
        assert_eq!(out.code, 0, "{args:?}: {}{}", out.stdout, out.stderr);
    }
    // The same with SASL asked for: the broker turns it down (or times out), lakectl says so.
    let sasl = t.path.with_file_name("sasl.toml");
    std::fs::write(
        &sasl,
        "name = \"sasl\"\n[kafka]\nsecurity_protocol = \"sasl_plaintext\"\n\
         sasl_mechanism = \"SCRAM-SHA-256\"\nsasl_username = \"etl\"\n[bronze.x]\ntopic = \"x\"\n",
    )
    .unwrap();
    let out = run(crate::util::lakectl()
        .args(["-v", "--log-format", "json", "validate"])
        .arg(&sasl)
        .env("LAKECTL_KAFKA_BROKERS", t.brokers())
        .env("LAKECTL_KAFKA_SASL_PASSWORD", SASL));
    assert_ne!(out.code, 0, "{}{}", out.stdout, out.stderr);
    output.push_str(&out.stdout);
    output.push_str(&out.stderr);
    assert!(output.contains("\"level\":\"DEBUG\""), "debug logs were on");
    for secret in [S3, PG, SASL] {
        assert!(!output.contains(secret), "{secret} shows in:\n{output}");
    }
}

#[test]
fn kafka_security_mistakes_exit_2_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.toml");
    let sasl = "name = \"s\"\n[kafka]\nsecurity_protocol = \"sasl_ssl\"\nsasl_username = \"etl\"\n";
    for (extra, needle) in [
        ("sasl_mechanism = \"SCRAM-SHA-1\"\n", "SCRAM-SHA-1"),
        (
            "sasl_mechanism = \"PLAIN\"\n",
            "LAKECTL_KAFKA_SASL_PASSWORD",
        ),
        ("", "kafka.sasl_mechanism"),
    ] {
        std::fs::write(&file, format!("{sasl}{extra}")).unwrap();
        let out = run(lakectl()
            .env_remove("LAKECTL_KAFKA_SASL_PASSWORD")
            .arg("-p")
            .arg(&file)
            .arg("validate"));
        assert_eq!(out.code, 2, "{extra}: {}", out.stderr);
        assert!(out.stderr.contains(needle), "{extra}: {}", out.stderr);
    }
}

/// Table names become folder names: one that is a path is refused before anything runs, and
/// nothing is written anywhere (the lake would be a folder next to the pipeline file).
#[test]
fn table_names_that_are_paths_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let file = work.join("p.toml");
    for (name, stage, toml) in [
        ("../x", "bronze", "[bronze.\"../x\"]\ntopic = \"t\"\n"),
        ("a/b", "bronze", "[bronze.\"a/b\"]\ntopic = \"t\"\n"),
        (
            "../../outside",
            "gold",
            "[gold.\"../../outside\"]\nsql = \"SELECT 1 AS one\"\n",
        ),
        (
            "..",
            "silver",
            "[bronze.b]\ntopic = \"t\"\n[silver.\"..\"]\nsource = \"b\"\nkey = [\"k\"]\n\
             [silver.\"..\".schema]\nk = \"string\"\n",
        ),
    ] {
        std::fs::write(&file, format!("name = \"p\"\n{toml}")).unwrap();
        let out = run(lakectl()
            .current_dir(&work)
            .env("LAKECTL_LAKE_URI", "file://./lake")
            .arg("-p")
            .arg(&file)
            .args(["run", stage, "--once"]));
        assert_eq!(out.code, 2, "{name}: {}", out.stderr);
        assert!(
            out.stderr.contains(&format!("{name:?}"))
                && out.stderr.contains("letters, digits and underscores"),
            "{name}: {}",
            out.stderr
        );
    }
    let written: Vec<_> = walk(dir.path());
    assert_eq!(written, vec![file.clone()], "files were written");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
