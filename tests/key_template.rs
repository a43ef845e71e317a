//! Keys render as the template says: each case is proved both ways, by the
//! function holding the exact key while it runs, and by the function being
//! busy while that exact key is held by hand.

mod support;

use std::fmt;

use lock_runtime::{Lock, lock};
use support::{AppError, held, is_busy};

/// Runs `call` while `key` is held by hand: it must report Busy.
fn busy_while_held<T: fmt::Debug>(key: &str, call: impl FnOnce() -> Result<T, AppError>) -> bool {
    let _guard = Lock::new(key.to_owned()).acquire().unwrap();
    is_busy(call())
}

struct User {
    id: u64,
    name: String,
}

struct Order {
    user: User,
    number: u32,
}

#[lock("kt-literal", wait = false)]
fn literal(expect: &str) -> Result<bool, AppError> {
    Ok(held(expect))
}

#[test]
fn literal_text_is_the_key() {
    assert!(literal("kt-literal").unwrap());
    assert!(busy_while_held("kt-literal", || literal("")));
}

#[lock("kt-report-<user.id>-<day>", wait = false)]
fn report(user: &User, day: u32, expect: &str) -> Result<bool, AppError> {
    Ok(held(expect))
}

#[test]
fn arguments_and_fields_render_with_display() {
    let user = User {
        id: 7,
        name: "ann".into(),
    };
    assert!(report(&user, 3, "kt-report-7-3").unwrap());
    assert!(busy_while_held("kt-report-7-3", || report(&user, 3, "")));
    // Another day is another key.
    let _other_day = Lock::new("kt-report-7-4").acquire().unwrap();
    assert!(report(&user, 3, "kt-report-7-3").unwrap());
}

#[lock(
    "kt-order-<order.user.name>-<order.user.id>-<order.number>",
    wait = false
)]
fn nested(order: Order, expect: &str) -> Result<bool, AppError> {
    Ok(held(expect))
}

#[test]
fn nested_fields_render() {
    let order = || Order {
        user: User {
            id: 1,
            name: "bo".into(),
        },
        number: 99,
    };
    assert!(nested(order(), "kt-order-bo-1-99").unwrap());
    assert!(busy_while_held("kt-order-bo-1-99", || nested(order(), "")));
}

#[lock("kt-pair-<pair.0>-<pair.1.1>", wait = false)]
fn tuple_fields(pair: (u8, (char, &str)), expect: &str) -> Result<bool, AppError> {
    Ok(held(expect))
}

#[test]
fn tuple_indexes_render() {
    assert!(tuple_fields((4, ('x', "y")), "kt-pair-4-y").unwrap());
    assert!(busy_while_held("kt-pair-4-y", || tuple_fields(
        (4, ('x', "y")),
        ""
    )));
}

#[lock("kt-<<angle>>-<n>-<<<n>>>", wait = false)]
fn angles(n: i32, expect: &str) -> Result<bool, AppError> {
    Ok(held(expect))
}

#[test]
fn doubled_angle_brackets_are_literal() {
    // The first `-5` is followed by `-<`, so its `-` is escaped.
    assert!(angles(-5, "kt-<angle>-%2D5-<-5>").unwrap());
    assert!(busy_while_held("kt-<angle>-%2D5-<-5>", || angles(-5, "")));
}

#[lock("kt-{<n>}-{}-{{x}}", wait = false)]
fn braces(n: u8, expect: &str) -> Result<bool, AppError> {
    Ok(held(expect))
}

#[lock("kt-{plain}", wait = false)]
fn braces_without_placeholder(expect: &str) -> Result<bool, AppError> {
    Ok(held(expect))
}

#[test]
fn braces_are_literal() {
    assert!(braces(5, "kt-{5}-{}-{{x}}").unwrap());
    assert!(busy_while_held("kt-{5}-{}-{{x}}", || braces(5, "")));
    assert!(braces_without_placeholder("kt-{plain}").unwrap());
    assert!(busy_while_held(
        "kt-{plain}",
        || braces_without_placeholder("")
    ));
}

#[lock("kt-ключ-<größe>-<name>-✓", wait = false)]
fn unicode(größe: u32, name: &str, expect: &str) -> Result<bool, AppError> {
    Ok(held(expect))
}

#[test]
fn unicode_text_and_names_render() {
    assert!(unicode(3, "Zoë", "kt-ключ-3-Zoë-✓").unwrap());
    assert!(busy_while_held("kt-ключ-3-Zoë-✓", || unicode(
        3, "Zoë", ""
    )));
}

struct Point {
    x: i32,
    y: i32,
}

#[lock("kt-destructured-<a>-<b>-<x>-<y>-<first>", wait = false)]
fn destructured(
    (a, b): (u8, u8),
    Point { x, y }: Point,
    [first, ..]: [u8; 3],
    expect: &str,
) -> Result<bool, AppError> {
    let _ = (a, b, x, y);
    Ok(held(expect))
}

#[test]
fn names_bound_by_patterns_are_arguments() {
    let call = |expect| destructured((1, 2), Point { x: 3, y: 4 }, [5, 6, 7], expect);
    assert!(call("kt-destructured-1-2-3-4-5").unwrap());
    assert!(busy_while_held("kt-destructured-1-2-3-4-5", || call("")));
}

#[lock("kt-raw-<type>-<shown>", wait = false)]
fn raw_and_impl(r#type: &str, shown: impl fmt::Display, expect: &str) -> Result<bool, AppError> {
    Ok(held(expect))
}

#[test]
fn raw_identifiers_and_impl_trait_arguments_render() {
    assert!(raw_and_impl("t", 1.5, "kt-raw-t-1.5").unwrap());
    assert!(busy_while_held("kt-raw-t-1.5", || raw_and_impl(
        "t", 1.5, ""
    )));
}

#[lock(wait = false)]
fn default_key(expect: &str) -> Result<bool, AppError> {
    Ok(held(expect))
}

mod nested_module {
    use super::*;

    #[lock(wait = false)]
    pub fn default_key(expect: &str) -> Result<bool, AppError> {
        Ok(held(expect))
    }
}

#[test]
fn without_a_key_the_function_path_is_the_key() {
    assert!(default_key("key_template::default_key").unwrap());
    assert!(busy_while_held(
        "key_template::default_key",
        || default_key("")
    ));
    assert!(nested_module::default_key("key_template::nested_module::default_key").unwrap());
    // Same name, other module: not the same lock.
    let _outer = Lock::new("key_template::default_key").acquire().unwrap();
    assert!(nested_module::default_key("key_template::nested_module::default_key").unwrap());
}

#[lock("kt-mut-<n>", wait = false)]
fn mutable_argument(mut n: u32) -> Result<u32, AppError> {
    n += 1;
    Ok(n)
}

#[test]
fn key_renders_before_the_body_changes_an_argument() {
    assert_eq!(mutable_argument(1).unwrap(), 2);
    assert!(busy_while_held("kt-mut-1", || mutable_argument(1)));
}

#[lock("kt-col-<x>-<y>", wait = false)]
fn column(x: &str, y: &str, expect: &str) -> Result<bool, AppError> {
    Ok(held(expect))
}

#[test]
fn values_that_contain_the_separator_do_not_collide() {
    // Issue #8: ("1-2", "3") and ("1", "2-3") both rendered `kt-col-1-2-3`.
    // A value followed by another placeholder has the first character of
    // the text after it (and `%`) percent-escaped; the last value is not.
    assert!(column("1-2", "3", "kt-col-1%2D2-3").unwrap());
    assert!(column("1", "2-3", "kt-col-1-2-3").unwrap());
    assert!(column("5%", "%", "kt-col-5%25-%").unwrap());
    let _first = Lock::new("kt-col-1%2D2-3").acquire().unwrap();
    assert!(
        column("1", "2-3", "kt-col-1-2-3").unwrap(),
        "another lock, free while the first is held"
    );
    assert!(is_busy(column("1-2", "3", "")));
    // Values without the separator render as before.
    assert!(busy_while_held("kt-col-7-8", || column("7", "8", "")));
}
