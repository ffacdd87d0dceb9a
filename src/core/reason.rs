//! Reject reasons. The built-in ones are the contract's strings
//! (`spec/events.md`, "Outcomes", and `spec/pipelines.md`); a pipeline adds
//! its own (a rule's `reason`, a column's `reason` override). They are
//! stored in `ingest_rejects.reason` and used as metric labels, so never
//! rename one.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Mutex, OnceLock};

/// A reason, as the `&'static str` it is stored as: `Copy`, compared by
/// value. Declared reasons are interned once when a pipeline is loaded (a
/// bounded set: the declarations' own), so a row's reason costs no
/// allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RejectReason(&'static str);

impl RejectReason {
    pub const MISSING_COLUMN: RejectReason = RejectReason("missing_column");
    pub const MALFORMED_CSV: RejectReason = RejectReason("malformed_csv");
    pub const MISSING_FIELD: RejectReason = RejectReason("missing_field");
    pub const INVALID_UUID: RejectReason = RejectReason("invalid_uuid");
    pub const INVALID_NUMBER: RejectReason = RejectReason("invalid_number");
    pub const OUT_OF_RANGE: RejectReason = RejectReason("out_of_range");
    pub const INVALID_TIMESTAMP: RejectReason = RejectReason("invalid_timestamp");
    pub const FUTURE_TIMESTAMP: RejectReason = RejectReason("future_timestamp");
    pub const TOO_LONG: RejectReason = RejectReason("too_long");
    pub const INVALID_ENUM: RejectReason = RejectReason("invalid_enum");
    pub const INVALID_BOOL: RejectReason = RejectReason("invalid_bool");
    pub const INVALID_DATE: RejectReason = RejectReason("invalid_date");
    /// A derived column's expression failed in PostgreSQL for this row.
    pub const DERIVED_FAILED: RejectReason = RejectReason("derived_failed");

    /// Every reason the engine itself gives, whatever the declaration.
    pub const BUILT_IN: [RejectReason; 13] = [
        RejectReason::MISSING_COLUMN,
        RejectReason::MALFORMED_CSV,
        RejectReason::MISSING_FIELD,
        RejectReason::INVALID_UUID,
        RejectReason::INVALID_NUMBER,
        RejectReason::OUT_OF_RANGE,
        RejectReason::INVALID_TIMESTAMP,
        RejectReason::FUTURE_TIMESTAMP,
        RejectReason::TOO_LONG,
        RejectReason::INVALID_ENUM,
        RejectReason::INVALID_BOOL,
        RejectReason::INVALID_DATE,
        RejectReason::DERIVED_FAILED,
    ];

    /// A declared reason (already checked to be a valid name), interned:
    /// the same text always gives the same `&'static str`, and each text is
    /// kept once for the life of the process.
    pub fn declared(name: &str) -> RejectReason {
        if let Some(r) = RejectReason::BUILT_IN.into_iter().find(|r| r.0 == name) {
            return r;
        }
        static INTERNED: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
        let mut set = INTERNED.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = set.get(name) {
            return RejectReason(s);
        }
        let s: &'static str = Box::leak(name.to_owned().into_boxed_str());
        set.insert(s);
        RejectReason(s)
    }

    pub fn as_str(self) -> &'static str {
        self.0
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_reasons_are_interned() {
        let a = RejectReason::declared("refund_without_amount");
        let b = RejectReason::declared(&String::from("refund_without_amount"));
        assert_eq!(a, b);
        assert!(std::ptr::eq(a.as_str(), b.as_str()));
        assert_eq!(RejectReason::declared("too_long"), RejectReason::TOO_LONG);
    }
}
