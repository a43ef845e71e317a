use lock_runtime::{LockError, lock};

#[lock("ledger-<token>", fencing = token)]
fn write(token: u64) -> Result<u64, LockError> {
    Ok(token)
}

fn main() {
    let _ = write;
}
