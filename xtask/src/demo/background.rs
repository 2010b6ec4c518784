//! Threads the demo runs next to the system: a port forward from the host
//! into the portal's namespace and the resource host's web server. They
//! poll a stop flag so teardown can join them before the namespaces go.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

/// How often a stopped thread notices.
pub const POLL: Duration = Duration::from_millis(50);

/// Stops and joins its threads when dropped (also while unwinding).
#[derive(Default)]
pub struct Background {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Background {
    /// Runs `f(stop)`; `f` must return soon after `stop` turns true.
    pub fn spawn(&mut self, name: &str, f: impl FnOnce(Arc<AtomicBool>) + Send + 'static) {
        let stop = self.stop.clone();
        match std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || f(stop))
        {
            Ok(t) => self.threads.push(t),
            Err(e) => eprintln!("demo: starting thread {name}: {e}"),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
