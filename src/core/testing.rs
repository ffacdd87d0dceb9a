//! Test helpers shared by the core's unit tests: the built-in schema, and
//! its columns by name as an enum so rule tables read as they always have.

use std::sync::{Arc, OnceLock};

use crate::core::pipeline::{builtin, Pipeline};
use crate::core::record::RawRecord;
use crate::core::schema::Schema;

/// The contract's columns, in the order of its table (and of the built-in
/// declaration: `columns_follow_the_contract` checks it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    EventId,
    EventType,
    UserId,
    SessionId,
    ProductId,
    ProductName,
    ProductCategory,
    Price,
    Quantity,
    EventTimestamp,
    DeviceType,
    UserAgent,
}

impl Column {
    pub const ALL: [Column; 12] = [
        Column::EventId,
        Column::EventType,
        Column::UserId,
        Column::SessionId,
        Column::ProductId,
        Column::ProductName,
        Column::ProductCategory,
        Column::Price,
        Column::Quantity,
        Column::EventTimestamp,
        Column::DeviceType,
        Column::UserAgent,
    ];

    /// Its index in the built-in schema.
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        &schema().columns[self as usize].name
    }
}

/// The built-in pipeline's schema.
pub fn schema() -> &'static Schema {
    static PIPELINE: OnceLock<Arc<Pipeline>> = OnceLock::new();
    &PIPELINE.get_or_init(builtin).schema
}

/// Splits on commas: the reader's unescaping is not under test here.
pub fn record(line: &[u8]) -> RawRecord {
    let mut rec = RawRecord::default();
    for field in line.split(|&b| b == b',') {
        rec.data.extend_from_slice(field);
        rec.bounds.push(rec.data.len());
    }
    rec
}
