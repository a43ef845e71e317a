use lock_runtime::{LockError, lock};

#[lock("ledger", fencing = token)]
fn write(entry: &str) -> Result<(), LockError> {
    let _ = entry;
    Ok(())
}

fn main() {
    let _ = write("x");
}
