use lock_runtime::{LockError, lock};

#[lock("report", timeout = 500)]
fn report() -> Result<(), LockError> {
    Ok(())
}

fn main() {
    let _ = report();
}
