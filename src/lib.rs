//! ingestd: streams CSV event files dropped into a folder into PostgreSQL,
//! exactly once. See ARCHITECTURE.md for the map of the code.

pub mod actors;
pub mod config;
pub mod core;
pub mod credit;
pub mod db;
pub mod disposal;
pub mod failpoints;
pub mod fsutil;
pub mod generate;
pub mod health;
pub mod http;
pub mod intake;
pub mod live;
pub mod messages;
pub mod metrics;
pub mod pipelines;
pub mod progress;
pub mod replay;
pub mod retry;
pub mod source;
pub mod status;
pub mod supervisor;

#[cfg(test)]
mod tidy;
