//! PostgreSQL faults and the schema: outages of every kind ridden out with
//! nothing counted against a file, the network to the server cut, rows the
//! schema refuses, the embedded cluster's location.

mod embedded;
mod network;
mod outages;
mod schema;
