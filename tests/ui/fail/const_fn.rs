use lock_runtime::{LockError, lock};

#[lock("limits")]
const fn limits() -> Result<u32, LockError> {
    Ok(4)
}

fn main() {
    let _ = limits();
}
