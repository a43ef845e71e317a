//! The conformance suite (`lock_runtime::testing`) for the blocking custom
//! store of the `lock_runtime::backend` documentation, copied
//! here as it is written there: the example a store author starts from must
//! itself be a correct store. `cargo test conformance_custom` runs each
//! behaviour as a test.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lock_runtime::backend::{Acquired, Attempt, BackendError, Busy, Request, Store, Token};
use lock_runtime::registry::AliasConfig;

// --- copied from the docs of `lock_runtime::backend` ---
#[derive(Default)]
struct MapStore {
    // key -> (owner, acquired at, lease end)
    map: Mutex<HashMap<String, (Token, Instant, Instant)>>,
    fence: Mutex<u64>,
}

impl Store for MapStore {
    fn try_acquire(&self, req: &Request<'_>) -> Result<Attempt, BackendError> {
        let mut map = self.map.lock().unwrap();
        let now = Instant::now();
        if let Some(&(_, since, until)) = map.get(req.key) {
            let stale = req.steal_after.is_some_and(|s| now >= since + s);
            if now < until && !stale {
                return Ok(Attempt::Busy(Busy::new(Some(until - now))));
            }
        }
        let lease = req.lease.unwrap_or(Duration::from_secs(30));
        map.insert(req.key.to_owned(), (req.token, now, now + lease));
        let mut fence = self.fence.lock().unwrap();
        *fence += 1;
        Ok(Attempt::Acquired(Acquired::new(Some(*fence))))
    }

    fn release(&self, key: &str, token: Token) -> Result<bool, BackendError> {
        let mut map = self.map.lock().unwrap();
        let owned = map
            .get(key)
            .is_some_and(|e| e.0 == token && Instant::now() < e.2);
        if owned {
            map.remove(key);
        }
        Ok(owned)
    }

    fn extend(&self, key: &str, token: Token, lease: Duration) -> Result<bool, BackendError> {
        let mut map = self.map.lock().unwrap();
        match map.get_mut(key) {
            Some(e) if e.0 == token && Instant::now() < e.2 => {
                e.2 = Instant::now() + lease;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}
// --- end of the copy ---

lock_runtime::conformance_tests!(conformance_custom, || AliasConfig::store(Arc::new(
    MapStore::default()
)));
