//! Input: how CSV is read and what becomes of every row (written,
//! duplicate, or rejected with the contract's reason), checked on files of
//! known content, on outside corpora and by property tests.

mod corpora;
mod outcomes;
mod props;
