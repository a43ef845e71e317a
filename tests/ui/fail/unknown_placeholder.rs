use lock_runtime::{LockError, lock};

struct User {
    id: u64,
}

#[lock("report-<usr>-<day>")]
fn build_report(user: &User, day: u32) -> Result<u64, LockError> {
    Ok(user.id + u64::from(day))
}

fn main() {
    let _ = build_report(&User { id: 1 }, 2);
}
