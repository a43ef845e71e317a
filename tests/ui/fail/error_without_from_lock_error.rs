use lock_runtime::lock;

#[derive(Debug)]
enum AppError {
    NotFound,
}

#[lock("report")]
fn report() -> Result<(), AppError> {
    Err(AppError::NotFound)
}

fn main() {
    let _ = report();
}
