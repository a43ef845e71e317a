//! `raise = true` with the boxed error types that take any error: the
//! `LockError` arrives inside, and can be downcast back.

use std::error::Error;

use lock_runtime::{Lock, LockError, lock};

#[lock("boxed-send-sync", wait = false)]
fn send_sync() -> Result<u8, Box<dyn Error + Send + Sync>> {
    Ok(1)
}

#[lock("boxed-plain", wait = false)]
fn plain() -> Result<u8, Box<dyn Error>> {
    Ok(2)
}

fn main() {
    assert_eq!(send_sync().unwrap(), 1);
    assert_eq!(plain().unwrap(), 2);
    let _a = Lock::new("boxed-send-sync").acquire().unwrap();
    let _b = Lock::new("boxed-plain").acquire().unwrap();
    let e = send_sync().unwrap_err();
    assert!(e.downcast_ref::<LockError>().unwrap().is_busy());
    let e = plain().unwrap_err();
    assert!(e.downcast_ref::<LockError>().unwrap().is_busy());
}
