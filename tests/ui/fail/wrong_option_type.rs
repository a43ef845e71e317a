use lock_runtime::{LockError, lock};

#[lock("report", wait = "yes")]
fn report() -> Result<(), LockError> {
    Ok(())
}

fn main() {
    let _ = report();
}
