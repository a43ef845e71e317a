use lock_runtime::once;

#[once("nightly", delete_on_exit = false)]
fn nightly() {}

fn main() {
    nightly();
}
