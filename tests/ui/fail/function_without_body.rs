use lock_runtime::{LockError, lock};

trait Job {
    #[lock("job")]
    fn run(&self) -> Result<(), LockError>;
}

struct Nightly;

impl Job for Nightly {
    fn run(&self) -> Result<(), LockError> {
        Ok(())
    }
}

fn main() {
    let _ = Nightly.run();
}
