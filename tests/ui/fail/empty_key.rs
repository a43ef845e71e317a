use lock_runtime::{LockError, lock};

#[lock("")]
fn report() -> Result<(), LockError> {
    Ok(())
}

fn main() {
    let _ = report();
}
