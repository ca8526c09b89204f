//! The FairPO trainer library: everything the `fairpo` binary does, as functions
//! that tests and `xtask` can call too.

pub mod cmd;
pub mod container;
pub mod early_stop;
pub mod paper;
pub mod plots;
pub mod tomlx;
