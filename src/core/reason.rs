//! The closed set of reject reasons. The strings are the contract's
//! (`spec/events.md`, "Outcomes"): they are stored in `ingest_rejects.reason`
//! and used as metric labels, so never rename one.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    MissingColumn,
    MalformedCsv,
    MissingField,
    InvalidUuid,
    InvalidEventType,
    InvalidNumber,
    OutOfRange,
    InvalidTimestamp,
    FutureTimestamp,
    TooLong,
    InvalidEnum,
    PurchaseWithoutPrice,
}

impl RejectReason {
    pub const ALL: [RejectReason; 12] = [
        RejectReason::MissingColumn,
        RejectReason::MalformedCsv,
        RejectReason::MissingField,
        RejectReason::InvalidUuid,
        RejectReason::InvalidEventType,
        RejectReason::InvalidNumber,
        RejectReason::OutOfRange,
        RejectReason::InvalidTimestamp,
        RejectReason::FutureTimestamp,
        RejectReason::TooLong,
        RejectReason::InvalidEnum,
        RejectReason::PurchaseWithoutPrice,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::MissingColumn => "missing_column",
            RejectReason::MalformedCsv => "malformed_csv",
            RejectReason::MissingField => "missing_field",
            RejectReason::InvalidUuid => "invalid_uuid",
            RejectReason::InvalidEventType => "invalid_event_type",
            RejectReason::InvalidNumber => "invalid_number",
            RejectReason::OutOfRange => "out_of_range",
            RejectReason::InvalidTimestamp => "invalid_timestamp",
            RejectReason::FutureTimestamp => "future_timestamp",
            RejectReason::TooLong => "too_long",
            RejectReason::InvalidEnum => "invalid_enum",
            RejectReason::PurchaseWithoutPrice => "purchase_without_price",
        }
    }

    pub fn parse(s: &str) -> Option<RejectReason> {
        RejectReason::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
