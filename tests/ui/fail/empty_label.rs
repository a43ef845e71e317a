use lock_runtime::{LockError, lock};

#[lock("report", label = " ")]
fn report() -> Result<(), LockError> {
    Ok(())
}

fn main() {
    let _ = report();
}
