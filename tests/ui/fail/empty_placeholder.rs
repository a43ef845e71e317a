use lock_runtime::{LockError, lock};

#[lock("report-<>")]
fn report(day: u32) -> Result<u32, LockError> {
    Ok(day)
}

fn main() {
    let _ = report(1);
}
