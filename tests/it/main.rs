//! The integration suite: one binary, a real PostgreSQL, the real daemon.

mod support;

mod e2e;
mod faults;
mod startup;
