//! The actors, one module each. Messages live in `crate::messages`.

pub mod checkpoint_keeper;
pub mod generator;
pub mod parser;
pub mod validator;
pub mod watcher;
pub mod writer;

use std::sync::atomic::{AtomicUsize, Ordering};

use actix::prelude::*;

use crate::messages::Stop;

static MAILBOX_CAPACITY: AtomicUsize = AtomicUsize::new(4);

/// `pipeline.mailbox_capacity`, set once by the Supervisor before it starts
/// the actors.
pub fn set_mailbox_capacity(n: usize) {
    MAILBOX_CAPACITY.store(n.max(1), Ordering::Relaxed);
}

pub fn mailbox_capacity() -> usize {
    MAILBOX_CAPACITY.load(Ordering::Relaxed)
}

/// A blocking task's failure as a message: the panic's text if it
/// panicked.
pub fn panic_message(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return e.to_string();
    }
    let payload = e.into_panic();
    if let Some(s) = payload.downcast_ref::<&str>() {
        format!("panic: {s}")
    } else if let Some(s) = payload.downcast_ref::<String>() {
        format!("panic: {s}")
    } else {
        "panic".into()
    }
}

macro_rules! stoppable {
    ($($actor:ty),*) => {$(
        impl Handler<Stop> for $actor {
            type Result = ();
            fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
                ctx.stop();
            }
        }
    )*};
}

stoppable!(
    checkpoint_keeper::CheckpointKeeper,
    generator::Generator,
    parser::Parser,
    validator::Validator,
    watcher::Watcher,
    writer::Writer
);
