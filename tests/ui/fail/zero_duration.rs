use lock_runtime::{LockError, lock};

#[lock("report", wait_for_ms = 0)]
fn report() -> Result<(), LockError> {
    Ok(())
}

fn main() {
    let _ = report();
}
