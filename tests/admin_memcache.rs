//! The admin API on memcached, against a private `memcached` this test
//! starts: one lock shown, released by force (its holder finds it lost, the
//! next holder's token is higher), and typed answers for what memcached
//! cannot do (list keys, keep an audit log).

#![cfg(feature = "memcache")]

mod support;

use std::time::Duration;

use lock_runtime::Lock;
use lock_runtime::registry::{self, AliasConfig};
use support::memcached::MemcachedServer;

#[test]
fn memcached_shows_one_lock_and_forces_it_free() {
    let server = MemcachedServer::start();
    let cfg = AliasConfig::from_url(&server.url())
        .unwrap()
        .poll_interval(Duration::from_millis(5));
    registry::add("admin-memcache", cfg).unwrap();
    let alias = registry::alias("admin-memcache").unwrap();
    let guard = Lock::new("stuck")
        .alias("admin-memcache")
        .acquire()
        .unwrap();
    let shown = alias.show("stuck").unwrap().expect("held");
    assert_eq!(shown.fencing, guard.fencing_token());
    assert!(shown.lease_left.unwrap() <= Duration::from_secs(30));
    assert!(alias.show("free").unwrap().is_none());
    assert!(alias.list("", None, 10).unwrap().is_none(), "cannot list");

    let forced = alias.force_release("stuck", "hung").unwrap();
    assert_eq!(forced.removed.unwrap().fencing, guard.fencing_token());
    let next = Lock::new("stuck")
        .alias("admin-memcache")
        .try_acquire()
        .unwrap()
        .expect("free after the forced release");
    assert!(next.fencing_token() > guard.fencing_token());
    assert!(guard.release().unwrap_err().is_not_held());
    assert!(alias.audit_log(10).unwrap_err().is_unsupported());
}
