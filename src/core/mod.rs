//! The pure core: no actix, no tokio, no tokio-postgres, no file system.
//! Everything here is a function of its inputs, so it is tested table-driven.

pub mod event;
pub mod header;
pub mod reader;
pub mod reason;
pub mod record;
pub mod validate;
