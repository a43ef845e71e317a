use lock_runtime::lock;

#[lock("report")]
fn report() -> Result<(), String> {
    Err("not found".to_owned())
}

fn main() {
    let _ = report();
}
