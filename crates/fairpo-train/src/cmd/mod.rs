//! One module per `fairpo` subcommand.

pub mod metrics;
