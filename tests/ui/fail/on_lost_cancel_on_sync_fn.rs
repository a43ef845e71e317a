use lock_runtime::{LockError, lock};

#[lock("report", on_lost = "cancel")]
fn report() -> Result<(), LockError> {
    Ok(())
}

fn main() {
    let _ = report();
}
