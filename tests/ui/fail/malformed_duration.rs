use lock_runtime::{LockError, lock};

#[lock("report", expire = "10 parsecs")]
fn report() -> Result<(), LockError> {
    Ok(())
}

fn main() {
    let _ = report();
}
