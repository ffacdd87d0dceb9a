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

/// Test helpers for actors: a collector to wire downstream of the actor
/// under test, as quickwit tests its actors.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use actix::prelude::*;

    /// Keeps every message it receives.
    pub struct Collector<M> {
        got: Arc<Mutex<Vec<M>>>,
    }

    impl<M: Message<Result = ()> + Send + Unpin + 'static> Collector<M> {
        /// Starts one; the messages it keeps are in the returned list.
        pub fn start() -> (Addr<Collector<M>>, Arc<Mutex<Vec<M>>>) {
            let got = Arc::new(Mutex::new(Vec::new()));
            (Collector { got: got.clone() }.start(), got)
        }
    }

    impl<M: Unpin + 'static> Actor for Collector<M> {
        type Context = Context<Self>;
    }

    impl<M: Message<Result = ()> + Send + Unpin + 'static> Handler<M> for Collector<M> {
        type Result = ();
        fn handle(&mut self, msg: M, _: &mut Context<Self>) {
            self.got.lock().unwrap().push(msg);
        }
    }

    /// Waits (yielding to the actors) until `got` holds `n` messages.
    pub async fn wait_for<M>(got: &Arc<Mutex<Vec<M>>>, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while got.lock().unwrap().len() < n {
            assert!(Instant::now() < deadline, "waited 10 s for {n} messages, got {}", got.lock().unwrap().len());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
