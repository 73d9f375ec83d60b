//! All integration tests of the `lakectl` binary, in one test binary (one link, one build).

mod util;

mod avro;
mod bronze;
mod cli;
mod cluster;
mod customer_events;
mod docs;
mod flink;
mod generate;
mod golden;
mod load;
mod metrics;
mod pipeline;
mod produce;
mod shop;
mod silver;
mod trust;
mod window;
