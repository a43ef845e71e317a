//! The attributes on methods and other function shapes: every receiver,
//! associated functions, generics, `impl Trait` arguments, `<self.id>` keys,
//! and default keys that tell two types' same-named methods apart.

mod support;

use std::fmt::Display;

use lock_runtime::{Lock, lock, once};
use support::{AppError, held, is_busy};

#[derive(Debug)]
struct Account {
    id: u32,
    balance: i64,
}

impl Account {
    #[lock("methods-account-<self.id>", wait = false)]
    fn balance(&self) -> Result<i64, AppError> {
        assert!(held(&format!("methods-account-{}", self.id)));
        Ok(self.balance)
    }

    #[lock("methods-account-<self.id>", wait = false)]
    fn deposit(&mut self, amount: i64) -> Result<i64, AppError> {
        self.balance += amount;
        Ok(self.balance)
    }

    #[lock("methods-account-<self.id>", wait = false)]
    fn close(self) -> Result<i64, AppError> {
        Ok(self.balance)
    }

    #[lock("methods-open-<id>", wait = false)]
    fn open(id: u32) -> Result<Self, AppError> {
        assert!(held(&format!("methods-open-{id}")));
        Ok(Account { id, balance: 0 })
    }

    #[once("methods-audit-<self.id>")]
    fn audit(&self) -> i64 {
        self.balance
    }

    #[lock(wait = false)]
    fn touch(&self) -> Result<&'static str, AppError> {
        Ok("account")
    }
}

#[test]
fn every_receiver_kind_works_and_keys_use_self_fields() {
    let mut account = Account::open(1).unwrap();
    assert_eq!(account.deposit(10).unwrap(), 10);
    assert_eq!(account.balance().unwrap(), 10);
    assert_eq!(account.audit(), Some(10));
    {
        let _held = Lock::new("methods-account-1").acquire().unwrap();
        assert!(is_busy(account.balance()));
        assert!(is_busy(account.deposit(1)));
        assert_eq!(account.balance, 10, "the body did not run");
        // Another account is another key.
        assert_eq!(Account { id: 2, balance: 3 }.balance().unwrap(), 3);
    }
    {
        let _held = Lock::new("methods-audit-1").acquire().unwrap();
        assert_eq!(account.audit(), None);
    }
    {
        let _held = Lock::new("methods-open-5").acquire().unwrap();
        assert!(is_busy(Account::open(5)));
    }
    assert_eq!(account.close().unwrap(), 10);
}

struct Invoice;

impl Invoice {
    #[lock(wait = false)]
    fn touch(&self) -> Result<&'static str, AppError> {
        Ok("invoice")
    }
}

#[test]
fn default_keys_of_same_named_methods_of_two_types_differ() {
    let account = Account { id: 9, balance: 0 };
    let account_key = format!("{}::touch", std::any::type_name::<Account>());
    let invoice_key = format!("{}::touch", std::any::type_name::<Invoice>());
    assert_eq!(account_key, "methods::Account::touch");
    assert_ne!(account_key, invoice_key);
    let _held = Lock::new(account_key).acquire().unwrap();
    assert!(is_busy(account.touch()));
    assert_eq!(Invoice.touch().unwrap(), "invoice");
}

#[lock("methods-generic-<item>", wait = false)]
fn generic<T: Display + Clone>(item: T) -> Result<T, AppError> {
    Ok(item.clone())
}

#[lock("methods-where-<item>", wait = false)]
fn with_where<T>(item: T) -> Result<String, AppError>
where
    T: Display,
{
    Ok(item.to_string())
}

#[test]
fn generic_functions_work() {
    assert_eq!(generic(5u8).unwrap(), 5);
    assert_eq!(generic("x").unwrap(), "x");
    assert_eq!(with_where(2.5).unwrap(), "2.5");
    let _held = Lock::new("methods-generic-5").acquire().unwrap();
    assert!(is_busy(generic(5i64)));
}

#[lock("methods-impl-<a>-<b>", wait = false)]
fn impl_trait_args(a: impl Display, b: impl Into<String> + Display) -> Result<String, AppError> {
    Ok(format!("{a}{}", b.into()))
}

#[once("methods-impl-once-<a>")]
fn impl_trait_once(a: impl Display + Clone) -> String {
    a.to_string()
}

#[test]
fn impl_trait_arguments_work() {
    assert_eq!(impl_trait_args(1, "b").unwrap(), "1b");
    assert_eq!(impl_trait_once('c'), Some("c".to_owned()));
    let _held = Lock::new("methods-impl-1-b").acquire().unwrap();
    assert!(is_busy(impl_trait_args(1, "b")));
}

struct Wrapper<T>(T);

impl<T: Display> Wrapper<T> {
    #[lock("methods-wrapper-<self.0>", wait = false)]
    fn show(&self) -> Result<String, AppError> {
        Ok(self.0.to_string())
    }

    #[lock(wait = false)]
    fn named(&self) -> Result<(), AppError> {
        Ok(())
    }
}

#[test]
fn methods_of_generic_types_work() {
    assert_eq!(Wrapper(4).show().unwrap(), "4");
    let _held = Lock::new("methods-wrapper-4").acquire().unwrap();
    assert!(is_busy(Wrapper(4).show()));
    assert!(Wrapper("x").show().is_ok());
    // The default key names the type with its parameters.
    let key = format!("{}::named", std::any::type_name::<Wrapper<u8>>());
    let _held = Lock::new(key).acquire().unwrap();
    assert!(is_busy(Wrapper(1u8).named()));
    assert!(Wrapper(1u16).named().is_ok());
}

trait Job {
    fn id(&self) -> u32;

    /// A provided method with a body can be locked; its default key names
    /// the implementing type.
    #[lock(wait = false)]
    fn run(&self) -> Result<u32, AppError> {
        Ok(self.id())
    }
}

struct Cleanup;

impl Job for Cleanup {
    fn id(&self) -> u32 {
        3
    }
}

trait Task {
    fn go(&self) -> Result<&'static str, AppError>;
}

impl Task for Cleanup {
    #[lock("methods-task", wait = false)]
    fn go(&self) -> Result<&'static str, AppError> {
        Ok("went")
    }
}

#[test]
fn trait_methods_work() {
    assert_eq!(Cleanup.run().unwrap(), 3);
    {
        let _held = Lock::new("methods::Cleanup::run").acquire().unwrap();
        assert!(is_busy(Cleanup.run()));
    }
    assert_eq!(Task::go(&Cleanup).unwrap(), "went");
    let _held = Lock::new("methods-task").acquire().unwrap();
    assert!(is_busy(Task::go(&Cleanup)));
}
