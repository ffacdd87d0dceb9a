//! The pure core: no actix, no tokio, no tokio-postgres, no file system.
//! Everything here is a function of its inputs, so it is tested table-driven.
//! `src/tidy.rs` keeps it so.

pub mod copy;
pub mod header;
pub mod key;
pub mod pipeline;
pub mod reader;
pub mod reason;
pub mod record;
pub mod schema;
#[cfg(test)]
pub(crate) mod testing;
pub mod validate;
pub mod value;
