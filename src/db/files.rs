//! The file states of `ingest_files`, typed: the table stores them as text
//! (with a CHECK constraint), the code never does.

use std::fmt;

/// Where a file identity stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileState {
    /// Registered, nothing committed yet.
    Pending,
    /// Some batches committed.
    InProgress,
    /// Every row committed and the counts add up; never read again.
    Done,
    /// Parked: damaged, superseded, or failed too often; not read again.
    Failed,
}

impl FileState {
    pub const ALL: [FileState; 4] = [FileState::Pending, FileState::InProgress, FileState::Done, FileState::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            FileState::Pending => "pending",
            FileState::InProgress => "in_progress",
            FileState::Done => "done",
            FileState::Failed => "failed",
        }
    }

    /// The stored text; the table's CHECK constraint allows only these, so
    /// anything else is a schema this code does not know (read as failed,
    /// never as done).
    pub fn parse(s: &str) -> FileState {
        FileState::ALL.into_iter().find(|f| f.as_str() == s).unwrap_or(FileState::Failed)
    }
}

impl fmt::Display for FileState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
