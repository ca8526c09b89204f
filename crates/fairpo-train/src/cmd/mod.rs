//! One module per `fairpo` subcommand.

pub mod backbone;
pub mod data;
pub mod eval;
pub mod export;
pub mod features;
pub mod metrics;
pub mod predict;
pub mod report;
pub mod selftest;
pub mod train;
