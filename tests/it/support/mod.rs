//! Test harness, one module per concern; a test file takes it all with
//! `use crate::support::*`.
//!
//! - [`cluster`]: PostgreSQL through `ingestd::db::embedded`: the cluster
//!   all tests share (a database per test) and a test's own cluster that it
//!   stops, crashes or restarts.
//! - [`db`]: a test's database and what the daemon wrote in it.
//! - [`daemon`]: the real binary in a temp folder, signals, waits with
//!   deadlines, HTTP, memory readings.
//! - [`files`]: CSV rows and files of known content, and the folders'
//!   contents.
//! - [`oracle`]: end states checked against what the files say.
//! - [`root`]: mechanisms that need root (mounts, chattr, sysctl, cgroups,
//!   network namespaces); tests that use them are `#[ignore = "needs root:
//!   …"]` and fail, not pass, when run without it.
//! - [`reader`]: the CSV reader run over bytes in memory.
//! - [`browser`]: headless Chromium through chromedriver (WebDriver); tests
//!   that use it are `#[ignore = "needs chromium and chromedriver (Debian
//!   packages)"]` and fail, not pass, without them.

pub mod browser;
pub mod cluster;
pub mod daemon;
pub mod db;
pub mod files;
pub mod oracle;
pub mod reader;
pub mod root;

pub use browser::*;
pub use cluster::*;
pub use daemon::*;
pub use db::*;
pub use files::*;
pub use oracle::*;
pub use root::*;
