//! The FairPO trainer library: everything the `fairpo` binary does, as functions
//! that tests and `xtask` can call too.

pub mod cmd;
pub mod config;
pub mod container;
pub mod device;
pub mod early_stop;
pub mod evaluate;
pub mod features;
pub mod hidden;
pub mod model;
pub mod paper;
pub mod plots;
pub mod report;
pub mod run;
pub mod tomlx;
pub mod trainer;
