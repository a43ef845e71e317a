use lock_runtime::{LockError, lock};

#[lock("cell-<row><col>")]
fn cell(row: u32, col: u32) -> Result<u32, LockError> {
    Ok(row * col)
}

fn main() {
    let _ = cell(1, 23);
}
