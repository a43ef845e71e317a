use async_trait::async_trait;
use lock_runtime::{LockError, lock};

#[async_trait]
trait Job {
    async fn run(&self) -> Result<(), LockError>;
}

struct Nightly;

// `#[lock]` above `#[async_trait]` lands on the impl block: it goes on each method.
#[lock("job")]
#[async_trait]
impl Job for Nightly {
    async fn run(&self) -> Result<(), LockError> {
        Ok(())
    }
}

fn main() {}
