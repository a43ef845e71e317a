use lock_runtime::{LockError, lock};

struct User {
    id: u64,
}

#[lock("report-<user..id>")]
fn report(user: &User) -> Result<u64, LockError> {
    Ok(user.id)
}

fn main() {
    let _ = report(&User { id: 1 });
}
