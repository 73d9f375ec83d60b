//! Fixtures shared by the CLI tests: the `lakectl` binary, the shipped pipeline, dead ports.
#![allow(dead_code)] // not every fixture is used by every test module

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub use lakehouse_core::testing::service_env;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn books_pipeline() -> PathBuf {
    repo_root().join("pipelines/books.toml")
}

/// `lakectl` with the test's environment (the services' addresses included).
pub fn lakectl() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lakectl"));
    cmd.env_remove("LAKECTL_PIPELINE").env("NO_COLOR", "1");
    cmd
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(cmd: &mut Command) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("lakectl runs");
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// A loopback port nothing listens on.
pub fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// True when every service of the stack is exported (panics under CI when one is not).
pub fn services_up() -> bool {
    ["LAKECTL_KAFKA_BROKERS", "AWS_ENDPOINT_URL", "DATABASE_URL"]
        .iter()
        .all(|v| service_env(v).is_some())
}
