use lock_runtime::{LockError, lock};

struct Job {
    id: u32,
}

impl Job {
    #[lock("job-<self.id>")]
    fn start(id: u32) -> Result<Job, LockError> {
        Ok(Job { id })
    }
}

fn main() {
    let _ = Job::start(1).map(|j| j.id);
}
