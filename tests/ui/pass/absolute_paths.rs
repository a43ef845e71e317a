//! Every path the expansion writes is absolute: this crate shadows `core`,
//! `std`, `lock_runtime`, the prelude's types and variants and the `format!`
//! family, and the attributes still expand to working code.

// The shadowing macros are unused, which is the point.
#![allow(dead_code, non_camel_case_types, unused_macros)]

mod core {}
mod std {}
mod lock_runtime {}

struct Option;
struct Some;
struct None;
struct Result;
struct Ok;
struct Err;
struct Duration;
struct Lock;
struct String;

macro_rules! format {
    ($($t:tt)*) => {
        compile_error!("the expansion used a relative `format!`")
    };
}
macro_rules! concat {
    ($($t:tt)*) => {
        compile_error!("the expansion used a relative `concat!`")
    };
}
macro_rules! module_path {
    ($($t:tt)*) => {
        compile_error!("the expansion used a relative `module_path!`")
    };
}

use ::lock_runtime::{LockError, lock, once};

#[lock("paths-<n>", wait = true, wait_for_ms = 0_1, expire = "1m", label = "paths")]
fn with_key(n: u32) -> ::core::result::Result<u32, LockError> {
    ::core::result::Result::Ok(n)
}

#[lock("paths-<n>-<m>")]
fn two_values(n: u32, m: &str) -> ::core::result::Result<u32, LockError> {
    ::core::result::Result::Ok(n + m.len() as u32)
}

#[lock(
    steal_after_ms = 100,
    delete_on_exit = true,
    fair = true,
    alias = "default"
)]
fn default_key() -> ::core::result::Result<(), LockError> {
    ::core::result::Result::Ok(())
}

#[once("paths-once-<n>")]
fn skipped(n: u8) -> u8 {
    n
}

#[once]
async fn skipped_async() -> u8 {
    2
}

#[lock]
async fn raised_async() -> ::core::result::Result<u8, LockError> {
    ::core::result::Result::Ok(3)
}

struct Counter(u8);

impl Counter {
    #[lock]
    fn method(&self) -> ::core::result::Result<u8, LockError> {
        // The expansion's locals are hidden: these are the user's own.
        let __lock_guard = self.0;
        let __lock_error = 1;
        ::core::result::Result::Ok(__lock_guard + __lock_error)
    }
}

fn main() {
    ::std::assert_eq!(with_key(1).unwrap(), 1);
    ::std::assert_eq!(two_values(1, "a-b").unwrap(), 4);
    default_key().unwrap();
    ::std::assert_eq!(skipped(4), ::core::option::Option::Some(4));
    ::std::assert_eq!(
        ::futures::executor::block_on(skipped_async()),
        ::core::option::Option::Some(2)
    );
    ::std::assert_eq!(::futures::executor::block_on(raised_async()).unwrap(), 3);
    ::std::assert_eq!(Counter(1).method().unwrap(), 2);
}
