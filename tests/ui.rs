//! Compile-time errors of `#[lock]` / `#[once]`: one case per rule in
//! `ui/fail/`, named after the rule, with the exact message in its `.stderr`;
//! `ui/pass/` holds expansions that must compile and run.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/fail/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
