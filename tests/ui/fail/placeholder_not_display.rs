use lock_runtime::{LockError, lock};

#[derive(Debug)]
struct Tenant {
    name: String,
}

#[lock("sync-<tenant>")]
fn sync(tenant: &Tenant) -> Result<usize, LockError> {
    Ok(tenant.name.len())
}

fn main() {
    let _ = sync(&Tenant { name: String::new() });
}
