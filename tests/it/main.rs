//! The integration suite: one binary, a real PostgreSQL, the real daemon.

mod support;

mod bigfaults;
mod cluster;
mod corpora;
mod crashpoints;
mod e2e;
mod faults;
mod fsfaults;
mod morefaults;
mod pgfaults;
mod props;
mod replay;
mod rootfaults;
mod rootfaults2;
mod schema;
mod startup;
