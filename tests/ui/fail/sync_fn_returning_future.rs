use std::future::Future;

use lock_runtime::{LockError, lock};

#[lock("export")]
fn export() -> impl Future<Output = Result<(), LockError>> {
    async { Ok(()) }
}

fn main() {
    let _ = export();
}
