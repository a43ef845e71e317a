//! Fencing tokens end to end: a holder whose lease ran out while it was
//! paused tries to write after the next holder did, and the store rejects
//! the stale write because its token is lower.
//!
//! Run with `cargo run --example fencing` (embedded store, no server).

use std::sync::Mutex;
use std::thread;
use std::time::Duration;

use lock_runtime::Lock;

/// A resource that accepts a write only with a token at least as high as
/// every token it has seen: the one check that makes a lease-based lock safe
/// against paused holders.
#[derive(Default)]
struct FencedStore {
    /// (highest token seen, value)
    inner: Mutex<(u64, String)>,
}

impl FencedStore {
    fn write(&self, token: u64, value: &str) -> Result<(), String> {
        let mut inner = self.inner.lock().expect("not poisoned");
        if token < inner.0 {
            return Err(format!(
                "rejected `{value}`: token {token} is older than {}",
                inner.0
            ));
        }
        *inner = (token, value.to_owned());
        Ok(())
    }
}

fn main() {
    let store = FencedStore::default();
    let lock = Lock::new("ledger").expire(Duration::from_millis(100));

    // A takes the lock, then stalls (a GC pause, a slow disk...) past its lease.
    let a = lock.acquire().expect("free");
    let token_a = a
        .fencing_token()
        .expect("the memory store keeps fencing tokens");
    println!("A holds the lock with token {token_a}, then stalls");
    thread::sleep(Duration::from_millis(150));
    println!("A's lease ran out while it stalled: lost = {}", a.is_lost());

    // B gets the lock meanwhile and writes.
    let b = lock.acquire().expect("A's lease ran out");
    let token_b = b.fencing_token().expect("fencing");
    store
        .write(token_b, "written by B")
        .expect("B holds the newest token");
    println!("B holds the lock with token {token_b} and writes");

    // A wakes up, unaware, and writes: the store refuses.
    match store.write(token_a, "written by A") {
        Ok(()) => println!("A's stale write went through: this must not happen"),
        Err(e) => println!("A's stale write: {e}"),
    }
    println!("A's release: {:?}", a.release().map_err(|e| e.to_string()));
    drop(b);
    println!(
        "the store holds: {:?}",
        store.inner.lock().expect("not poisoned").1
    );
}
