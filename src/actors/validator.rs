//! Validator: applies the contract's rules to every record of a batch,
//! drops in-batch duplicates (first wins) and sets apart the rows whose id
//! it saw in a recent batch (`Repeats`).
//!
//! - Receives: `Parsed` (Parser).
//! - Emits: `Validated` to the Writer, in arrival order, each batch
//!   carrying its credit on.
//! - State: a queue of accepted read steps, one validated at a time (all
//!   its batches in one blocking-pool trip); the ids
//!   of recent valid rows (`RecentIds`, bounded).
//! - On restart: the queue is lost with the actor; the Supervisor restarts
//!   the pipeline from the checkpoints, so nothing is lost or repeated. The
//!   recent ids start empty, which only costs speed.
//! - On drain: nothing special; batches already accepted are passed on.
//! - Backpressure: none of its own; the credit window bounds its queue.
//!
//! The rules themselves are the pure `core::validate`; this actor only runs
//! them off the actor thread.

use std::collections::VecDeque;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use bytes::BytesMut;

use crate::actors::parser::panic_message;
use crate::actors::writer::Writer;
use crate::core::validate::validate;
use crate::db::copy::CopyEncoder;
use crate::messages::{ChildFailed, Parsed, ParsedBatch, RejectRow, Repeats, Validated, ValidatedBatch};

/// Slots of one generation's table (a power of two): 512 KiB of 32-bit tags.
const SLOTS: usize = 1 << 17;
/// Ids one generation of `RecentIds` holds: 3/4 of its slots, so a probe
/// for an absent id stays short.
const GENERATION: usize = SLOTS / 4 * 3;

/// The ids of the latest valid rows: the last one or two generations of
/// 98 304, about 1 MB in all. A row whose id is here is very likely a
/// duplicate, but not surely: its first occurrence may still be
/// uncommitted, refused by the database, or another id's 32-bit tag met on
/// its probe run (about one lookup in 10^9). So it is only *presumed* one,
/// and the Writer checks it against the table; guessing wrong costs time,
/// never correctness. An id missed here that is already stored costs more:
/// the batch's direct COPY meets it and the batch is redone through
/// staging. So the memory is as long as 1 MB allows: with two generations
/// of 57 344 hashes (1.2 MB), duplicates of rows further back made 15 of
/// 120 transactions of the benchmark's dirty data waste a COPY.
pub struct RecentIds {
    /// Keys the hash per process, so no input can aim at collisions.
    seed: u64,
    current: Generation,
    previous: Generation,
}

/// An open-addressing table of ids: an id's hash picks its home slot (17
/// bits) and is stored as a nonzero 32-bit tag (other bits); 0 is empty.
struct Generation {
    slots: Box<[u32]>,
    len: usize,
}

impl Generation {
    fn new() -> Self {
        Generation { slots: vec![0; SLOTS].into_boxed_slice(), len: 0 }
    }

    /// Home slot and tag of a hash.
    fn place(key: u64) -> (usize, u32) {
        (key as usize & (SLOTS - 1), ((key >> 32) as u32).max(1))
    }

    fn contains(&self, key: u64) -> bool {
        let (mut i, tag) = Self::place(key);
        loop {
            match self.slots[i] {
                0 => return false,
                t if t == tag => return true,
                _ => i = (i + 1) & (SLOTS - 1),
            }
        }
    }

    fn insert(&mut self, key: u64) {
        let (mut i, tag) = Self::place(key);
        loop {
            match self.slots[i] {
                0 => {
                    self.slots[i] = tag;
                    self.len += 1;
                    return;
                }
                t if t == tag => return,
                _ => i = (i + 1) & (SLOTS - 1),
            }
        }
    }
}

impl Default for RecentIds {
    fn default() -> Self {
        RecentIds { seed: RandomState::new().hash_one(0u8), current: Generation::new(), previous: Generation::new() }
    }
}

impl RecentIds {
    /// Both halves of the id through a 64-bit finalizer (splitmix64's):
    /// every input bit moves every output bit, so sequential ids spread
    /// over the table as well as random ones.
    fn key(&self, id: &uuid::Uuid) -> u64 {
        fn mix(mut z: u64) -> u64 {
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        let (hi, lo) = id.as_u64_pair();
        mix(hi ^ mix(lo ^ self.seed))
    }

    pub fn contains(&self, id: &uuid::Uuid) -> bool {
        let k = self.key(id);
        self.current.contains(k) || self.previous.contains(k)
    }

    pub fn insert(&mut self, id: &uuid::Uuid) {
        if self.current.len >= GENERATION {
            // The oldest generation's table, emptied, takes the new one.
            std::mem::swap(&mut self.previous, &mut self.current);
            self.current.slots.fill(0);
            self.current.len = 0;
        }
        let k = self.key(id);
        self.current.insert(k);
    }
}

pub struct Validator {
    writer: Addr<Writer>,
    supervisor: Recipient<ChildFailed>,
    /// Read steps' batches, one step validated at a time.
    queue: VecDeque<Vec<ParsedBatch>>,
    /// Taken by the step being validated (off the actor thread), given back
    /// with its result; `None` meanwhile.
    recent: Option<RecentIds>,
}

impl Validator {
    pub fn new(writer: Addr<Writer>, supervisor: Recipient<ChildFailed>) -> Self {
        Validator { writer, supervisor, queue: VecDeque::new(), recent: Some(RecentIds::default()) }
    }

    /// Validates the next `Parsed` (all its batches in one blocking-pool
    /// trip) if none is being validated.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.recent.is_none() {
            return;
        }
        let Some(batches) = self.queue.pop_front() else { return };
        let mut recent = self.recent.take().expect("checked above");
        let writer = self.writer.clone();
        // The file being validated, for blaming a panic on the right one.
        let validating = Arc::new(AtomicI64::new(batches.first().map_or(0, |b| b.file.file_id)));
        let now_validating = validating.clone();
        let fut = async move {
            let validated = tokio::task::spawn_blocking(move || {
                let mut room = BytesMut::with_capacity(batches.iter().map(payload_room).sum());
                let v: Vec<ValidatedBatch> = batches
                    .into_iter()
                    .map(|b| {
                        now_validating.store(b.file.file_id, Ordering::Relaxed);
                        validate_batch(b, &mut recent, &mut room)
                    })
                    .collect();
                (v, recent)
            })
            .await;
            match validated {
                Ok((v, recent)) => {
                    // Awaiting the acceptance keeps batches in order.
                    let _ = writer.send(Validated(v)).await;
                    Ok(recent)
                }
                Err(e) => Err(ChildFailed {
                    actor: "validator",
                    file: Some(validating.load(Ordering::Relaxed)),
                    error: panic_message(e),
                }),
            }
        };
        ctx.spawn(fut.into_actor(self).map(|result, act, ctx| match result {
            Ok(recent) => {
                act.recent = Some(recent);
                act.pump(ctx)
            }
            Err(f) => {
                act.supervisor.do_send(f);
                ctx.stop();
            }
        }));
    }
}

/// Room for a batch's events payload: binary rows run about the size of
/// the unescaped text plus ~120 bytes of lengths and fixed-size values.
fn payload_room(batch: &ParsedBatch) -> usize {
    batch.records.bytes() / 2 + batch.records.len() * 128
}

/// Validates every record and encodes the valid ones for COPY, into `room`
/// (see `CopyEncoder::within`); the first valid row with a given event_id
/// wins. Valid rows whose id is in `recent` go to the batch's repeats; the
/// ids of all valid rows join `recent`.
pub fn validate_batch(batch: ParsedBatch, recent: &mut RecentIds, room: &mut BytesMut) -> ValidatedBatch {
    let now = chrono::Utc::now();
    let rows = batch.records.len();
    let mut valid = Vec::with_capacity(rows);
    let mut rejects = Vec::new();
    for rec in batch.records.iter() {
        crate::failpoints::hit_row(rec.raw, rec.line);
        match validate(&batch.header, rec, now) {
            Ok(event) => valid.push((event, rec.line)),
            Err(rejection) => rejects.push(RejectRow {
                line: rec.line,
                reason: rejection.reason,
                detail: rejection.detail,
                raw: rec.raw.to_vec(),
                raw_truncated: rec.raw_truncated,
            }),
        }
    }
    // Rows go to the table in event_id order. Writers committing different
    // files at once then take the same ids in the same order, so one waits
    // for the other instead of deadlocking. Sorted by id, then line, the
    // first row of each id leads its run: the rest are in-batch duplicates.
    valid.sort_unstable_by_key(|(e, line)| (e.event_id, *line));
    let before = valid.len();
    valid.dedup_by_key(|(e, _)| e.event_id);
    let batch_duplicates = (before - valid.len()) as u64;
    let mut events = CopyEncoder::within(std::mem::take(room));
    let mut repeats = CopyEncoder::new(0);
    let mut repeat_ids = Vec::new();
    for (event, line) in &valid {
        if recent.contains(&event.event_id) {
            repeats.push(event, *line, &batch.file.name);
            repeat_ids.push(event.event_id);
        } else {
            events.push(event, *line, &batch.file.name);
        }
    }
    for (event, _) in &valid {
        recent.insert(&event.event_id);
    }
    drop(valid);
    let (events, rest) = events.finish_within();
    *room = rest;
    ValidatedBatch {
        file: batch.file,
        header: batch.header,
        start_offset: batch.start_offset,
        start_line: batch.start_line,
        end_offset: batch.end_offset,
        end_line: batch.end_line,
        rows: rows as u64,
        events,
        repeats: Repeats { ids: repeat_ids, rows: repeats.finish() },
        rejects,
        batch_duplicates,
        end: batch.end,
        credit: batch.credit,
    }
}

impl Actor for Validator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(crate::actors::mailbox_capacity());
    }
}

impl Handler<Parsed> for Validator {
    type Result = ();
    fn handle(&mut self, msg: Parsed, ctx: &mut Context<Self>) {
        self.queue.push_back(msg.0);
        self.pump(ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> uuid::Uuid {
        uuid::Uuid::from_u128(n)
    }

    /// Two generations are remembered; the third start forgets the first.
    #[test]
    fn recent_ids_keep_two_generations() {
        let g = GENERATION as u128;
        let mut r = RecentIds::default();
        assert!(!r.contains(&id(0)));
        for n in 0..2 * g {
            r.insert(&id(n));
        }
        assert!((0..2 * g).all(|n| r.contains(&id(n))));
        assert!(!r.contains(&id(2 * g)));
        r.insert(&id(2 * g));
        assert_eq!((0..g).filter(|&n| r.contains(&id(n))).count(), 0, "the first generation is forgotten");
        assert!((g..=2 * g).all(|n| r.contains(&id(n))));
        assert_eq!((r.current.len, r.previous.len), (1, GENERATION));
    }

    /// An id inserted again takes no second slot; ids whose hashes share a
    /// home slot probe on and are all found.
    #[test]
    fn a_generation_probes_past_taken_slots() {
        let mut g = Generation::new();
        let home = 5u64;
        let keys: Vec<u64> = (1..=40u64).map(|t| (t << 32) | home).chain([(7 << 32) | (SLOTS as u64 - 1)]).collect();
        for &k in &keys {
            g.insert(k);
            g.insert(k);
        }
        assert_eq!(g.len, keys.len());
        assert!(keys.iter().all(|&k| g.contains(k)));
        assert!(!g.contains((41 << 32) | home));
    }
}
