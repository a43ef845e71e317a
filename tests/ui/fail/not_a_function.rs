use lock_runtime::lock;

#[lock("config")]
struct Config {
    path: String,
}

fn main() {
    let _ = Config { path: String::new() }.path;
}
