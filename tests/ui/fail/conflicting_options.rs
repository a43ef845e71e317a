use lock_runtime::{LockError, lock};

#[lock("report", wait = false, wait_for_ms = 500)]
fn report() -> Result<(), LockError> {
    Ok(())
}

fn main() {
    let _ = report();
}
