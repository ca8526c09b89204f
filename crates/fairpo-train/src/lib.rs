//! The FairPO trainer library: everything the `fairpo` binary does, as functions
//! that tests and `xtask` can call too.

pub mod cmd;
