//! A row that passed every rule of the contract, in its stored form.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

/// One valid event, borrowing its text from the record it was read from (no
/// allocation per field). Text fields are trimmed; enums are lowercase;
/// `quantity` already has the contract's default of 1 applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Event<'a> {
    pub event_id: Uuid,
    pub event_type: &'static str,
    pub user_id: &'a str,
    pub session_id: Option<&'a str>,
    pub product_id: &'a str,
    pub product_name: Option<&'a str>,
    pub product_category: Option<&'a str>,
    /// Scale 2 at most (the contract allows at most 2 decimals).
    pub price: Option<Decimal>,
    pub quantity: i32,
    pub event_timestamp: DateTime<Utc>,
    pub device_type: Option<&'static str>,
    pub user_agent: Option<&'a str>,
}
