//! The integration suite: one binary, a real PostgreSQL, the real daemon.
//! One module per subject; `support` holds the harness.

mod support;

mod database;
mod files;
mod input;
mod observability;
mod pipelines;
mod process;
mod resources;
