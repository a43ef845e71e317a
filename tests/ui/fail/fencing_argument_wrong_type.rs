use lock_runtime::{LockError, lock};

#[lock("ledger", fencing = token)]
fn write(token: String, entry: &str) -> Result<(), LockError> {
    let _ = (token, entry);
    Ok(())
}

fn main() {
    let _ = write("x");
}
