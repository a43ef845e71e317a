use lock_runtime::{LockError, lock};

#[lock("report", wait = true, wait = false)]
fn report() -> Result<(), LockError> {
    Ok(())
}

fn main() {
    let _ = report();
}
