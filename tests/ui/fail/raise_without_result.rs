use lock_runtime::lock;

#[lock("report")]
fn report() -> String {
    String::from("done")
}

fn main() {
    let _ = report();
}
