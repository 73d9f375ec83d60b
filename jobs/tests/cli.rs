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
