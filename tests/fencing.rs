//! Fencing tokens: strictly increasing per key on a store, across holders,
//! across expiry and across OS processes, and enough for a resource to
//! reject the write of a holder whose lease ran out.

mod support;

use std::sync::Mutex;
use std::time::Duration;

use lock_runtime::Lock;
use lock_runtime::registry::{self, AliasConfig};
use support::{RedisServer, redis_alias};

/// Accepts a write only with a token at least as high as any seen so far.
#[derive(Default)]
struct FencedStore(Mutex<u64>);

impl FencedStore {
    fn write(&self, token: u64) -> bool {
        let mut highest = self.0.lock().unwrap();
        if token < *highest {
            return false;
        }
        *highest = token;
        true
    }
}

fn stale_holder_is_rejected(alias: &str) {
    let store = FencedStore::default();
    let lock = Lock::new("fenced")
        .alias(alias.to_owned())
        .expire(Duration::from_millis(150));
    let a = lock.acquire().unwrap();
    std::thread::sleep(Duration::from_millis(200)); // A stalls past its lease
    assert!(a.is_lost());
    let b = lock.wait(false).acquire().expect("A's lease ran out");
    assert!(
        store.write(b.fencing_token().unwrap()),
        "B's write is accepted"
    );
    assert!(
        !store.write(a.fencing_token().unwrap()),
        "A's stale write is rejected"
    );
    assert!(a.release().unwrap_err().is_not_held());
}

#[test]
fn memory_store_fences_a_stale_holder() {
    stale_holder_is_rejected("default");
}

#[test]
fn redis_store_fences_a_stale_holder() {
    let server = RedisServer::start();
    redis_alias(&server, "fencing-redis");
    stale_holder_is_rejected("fencing-redis");
}

#[test]
fn tokens_strictly_increase_across_processes() {
    const PER_CHILD: usize = 200;
    match support::child_role().as_deref() {
        Some(_) => {
            let url = std::env::var("REDIS_URL").unwrap();
            registry::add("fencing-shared", AliasConfig::from_url(&url).unwrap()).unwrap();
            let mut conn = redis::Client::open(url).unwrap().get_connection().unwrap();
            for i in 0..PER_CHILD {
                // Every fifth lease runs out instead of being released; the
                // others are long enough to survive a loaded machine.
                let expires = i % 5 == 0;
                let lease = if expires {
                    Duration::from_millis(40)
                } else {
                    Duration::from_secs(5)
                };
                let guard = Lock::new("k")
                    .alias("fencing-shared")
                    .expire(lease)
                    .acquire()
                    .unwrap();
                let token = guard.fencing_token().unwrap();
                // Recorded under the lock, so the list is in acquisition order.
                let () = redis::cmd("RPUSH")
                    .arg("tokens")
                    .arg(token)
                    .query(&mut conn)
                    .unwrap();
                if expires {
                    std::mem::forget(guard);
                    std::thread::sleep(Duration::from_millis(45));
                } else {
                    guard.release().unwrap();
                }
            }
            support::report("done");
        }
        None => {
            let server = RedisServer::start();
            support::run_children(
                &support::test_name!(),
                "worker",
                4,
                &[("REDIS_URL", server.url().as_str())],
            );
            let tokens: Vec<u64> = match server.cmd(&["LRANGE", "tokens", "0", "-1"]) {
                support::RespValue::Array(items) => items
                    .into_iter()
                    .map(|v| v.into_string().unwrap().parse().unwrap())
                    .collect(),
                other => panic!("{other:?}"),
            };
            assert_eq!(tokens.len(), 4 * PER_CHILD);
            for pair in tokens.windows(2) {
                assert!(
                    pair[0] < pair[1],
                    "fencing tokens went back: {} then {}",
                    pair[0],
                    pair[1]
                );
            }
        }
    }
}

mod through_the_attribute {
    use lock_runtime::{LockError, lock, once};

    /// `token` is not an argument callers pass: the attribute takes it out
    /// of the signature and binds it to the lock's fencing token.
    #[lock("fenced-write-<key>", fencing = token)]
    fn write(token: u64, key: &str) -> Result<u64, LockError> {
        assert!(!key.is_empty());
        Ok(token)
    }

    #[once("fenced-once", fencing = token)]
    fn write_once(token: Option<u64>) -> Option<u64> {
        token
    }

    #[lock("fenced-async-<key>", fencing = token)]
    async fn write_async(key: String, token: u64) -> Result<(u64, String), LockError> {
        Ok((token, key))
    }

    #[test]
    fn the_token_reaches_the_function_and_increases() {
        let first = write("a").unwrap();
        let second = write("a").unwrap();
        assert!(second > first, "{second} after {first}");
        assert!(write_once().unwrap().is_some());
    }

    #[tokio::test]
    async fn async_functions_get_it_too() {
        let (a, key) = write_async("b".into()).await.unwrap();
        let (b, _) = write_async("b".into()).await.unwrap();
        assert_eq!(key, "b");
        assert!(b > a);
    }
}
