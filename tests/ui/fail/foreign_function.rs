use lock_runtime::lock;

unsafe extern "C" {
    #[lock("abs")]
    pub fn abs(x: i32) -> i32;
}

fn main() {
    let _ = unsafe { abs(-1) };
}
