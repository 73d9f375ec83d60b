//! lakectl's job types, one module each, plus the commands around them. A new job type is a
//! new module here implementing `lakehouse_core::Job` with its [`kind::JobKind`], and one line
//! in [`kind::kinds`] (docs/adding-a-job-type.md).

pub mod bronze;
pub mod catalog;
mod columns;
pub mod generate;
pub mod gold;
pub mod kind;
pub mod load;
pub mod maintenance;
pub mod produce;
pub mod silver;
pub mod sink;
pub mod stage;
pub mod status;
pub mod topic_producer;
pub mod validate;
pub mod window;
