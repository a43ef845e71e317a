use lock_runtime::{LockError, lock};

const KEY: &str = "report";

#[lock(KEY, wait = false)]
fn report() -> Result<(), LockError> {
    Ok(())
}

fn main() {
    let _ = report();
    let _ = KEY;
}
