//! The attribute's arguments: an optional key literal, then `name = value`
//! options. Every option is one row of [`OPTIONS`]; each mistake becomes one
//! error spanned on the token to change.

use proc_macro2::TokenStream;
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::{Expr, ExprLit, ExprUnary, Ident, Lit, LitBool, LitStr, Path, Token, UnOp};

/// Which attribute is expanding: they differ only in their defaults.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    Lock,
    Once,
}

impl Flavor {
    pub(crate) fn attr(self) -> &'static str {
        match self {
            Flavor::Lock => "#[lock]",
            Flavor::Once => "#[once]",
        }
    }
}

/// An option as written: its name (for spans in later checks) and its value.
pub(crate) struct Setting<T> {
    pub(crate) name: Ident,
    pub(crate) value: T,
}

/// The parsed arguments; `None` means "not written", so that only the options
/// the user gave turn into builder calls.
#[derive(Default)]
pub(crate) struct Args {
    pub(crate) key: Option<LitStr>,
    pub(crate) alias: Option<Setting<LitStr>>,
    pub(crate) wait: Option<Setting<bool>>,
    pub(crate) wait_for_ms: Option<Setting<u64>>,
    pub(crate) steal_after_ms: Option<Setting<u64>>,
    pub(crate) expire_ms: Option<Setting<u64>>,
    pub(crate) raise: Option<Setting<bool>>,
    pub(crate) delete_on_exit: Option<Setting<bool>>,
    pub(crate) fair: Option<Setting<bool>>,
    pub(crate) fencing: Option<Setting<Ident>>,
    pub(crate) on_lost: Option<Setting<OnLost>>,
    pub(crate) label: Option<Setting<LitStr>>,
    pub(crate) krate: Option<Setting<Path>>,
}

/// What an `async fn` does when its lock is lost while its body runs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnLost {
    /// Keep running (the default); the loss is reported when it ends.
    Ignore,
    /// Stop the body at its next await point and fail as if not acquired.
    Cancel,
}

/// One row per option: adding an option is a row here (plus its field in
/// [`Args`] and its use in `expand`). The names listed in "unknown option"
/// errors come from this table, so they cannot go stale.
struct OptionSpec {
    name: &'static str,
    set: fn(&mut Args, &Entry) -> syn::Result<()>,
}

const OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        name: "alias",
        set: |a, e| e.setting(Entry::string).map(|v| a.alias = Some(v)),
    },
    OptionSpec {
        name: "wait",
        set: |a, e| e.setting(Entry::boolean).map(|v| a.wait = Some(v)),
    },
    OptionSpec {
        name: "wait_for_ms",
        set: |a, e| e.setting(Entry::millis).map(|v| a.wait_for_ms = Some(v)),
    },
    OptionSpec {
        name: "steal_after_ms",
        set: |a, e| e.setting(Entry::millis).map(|v| a.steal_after_ms = Some(v)),
    },
    OptionSpec {
        name: "expire",
        set: |a, e| e.setting(Entry::duration).map(|v| a.expire_ms = Some(v)),
    },
    OptionSpec {
        name: "raise",
        set: |a, e| e.setting(Entry::boolean).map(|v| a.raise = Some(v)),
    },
    OptionSpec {
        name: "delete_on_exit",
        set: |a, e| {
            e.setting(Entry::boolean)
                .map(|v| a.delete_on_exit = Some(v))
        },
    },
    OptionSpec {
        name: "fair",
        set: |a, e| e.setting(Entry::boolean).map(|v| a.fair = Some(v)),
    },
    OptionSpec {
        name: "fencing",
        set: |a, e| e.setting(Entry::ident).map(|v| a.fencing = Some(v)),
    },
    OptionSpec {
        name: "on_lost",
        set: |a, e| e.setting(Entry::on_lost).map(|v| a.on_lost = Some(v)),
    },
    OptionSpec {
        name: "label",
        set: |a, e| e.setting(Entry::label).map(|v| a.label = Some(v)),
    },
    OptionSpec {
        name: "crate",
        set: |a, e| e.setting(Entry::path).map(|v| a.krate = Some(v)),
    },
];

/// Names people bring from other lock libraries (django-cache-lock, djangae,
/// redis-py, python-redis-lock) or guess, with what to write instead.
const HINTS: &[(&str, &str)] = &[
    (
        "timeout",
        "to limit how long to wait for the lock use `wait_for_ms = 500`; to limit how long it is held use `expire = \"30s\"`",
    ),
    ("wait_for", "use `wait_for_ms = <milliseconds>`"),
    ("wait_ms", "use `wait_for_ms = <milliseconds>`"),
    ("wait_timeout", "use `wait_for_ms = <milliseconds>`"),
    ("blocking_timeout", "use `wait_for_ms = <milliseconds>`"),
    ("blocking", "use `wait = true` or `wait = false`"),
    ("block", "use `wait = true` or `wait = false`"),
    ("steal_after", "use `steal_after_ms = <milliseconds>`"),
    ("steal", "use `steal_after_ms = <milliseconds>`"),
    ("raise_exception", "use `raise = true` or `raise = false`"),
    ("raises", "use `raise = true` or `raise = false`"),
    (
        "ttl",
        "use `expire = <seconds>` or a duration string like `expire = \"30s\"`",
    ),
    (
        "lease",
        "use `expire = <seconds>` or a duration string like `expire = \"30s\"`",
    ),
    (
        "expires",
        "use `expire = <seconds>` or a duration string like `expire = \"30s\"`",
    ),
    (
        "expire_ms",
        "use `expire = \"<N>ms\"`: a bare number for `expire` is in seconds",
    ),
    (
        "expire_s",
        "use `expire = <seconds>`: a bare number for `expire` is in seconds",
    ),
    (
        "key",
        "the key is the first argument, without a name: `#[lock(\"report-<user.id>\")]`",
    ),
    (
        "name",
        "the key is the first argument, without a name: `#[lock(\"report-<user.id>\")]`",
    ),
    (
        "prefix",
        "prefix is an alias setting: set it with registry::configure",
    ),
    (
        "delete",
        "use `delete_on_exit = true` or `delete_on_exit = false`",
    ),
    (
        "release",
        "use `delete_on_exit = true` or `delete_on_exit = false`",
    ),
    ("fifo", "use `fair = true`"),
    (
        "fencing_token",
        "use `fencing = <argument>`, naming a `u64` argument that receives the token",
    ),
    (
        "token",
        "use `fencing = <argument>`, naming a `u64` argument that receives the fencing token",
    ),
    (
        "on_loss",
        "use `on_lost = \"cancel\"` or `on_lost = \"ignore\"`",
    ),
    (
        "cancel",
        "use `on_lost = \"cancel\"` to stop the body when the lock is lost",
    ),
    ("backend", "use `alias = \"<configured alias>\"`"),
    ("using", "use `alias = \"<configured alias>\"`"),
    ("krate", "use `crate = \"path::to::lock_runtime\"`"),
];

/// `name = value` as written, before its value is checked.
struct Entry {
    name: Ident,
    value: Expr,
}

impl Args {
    // Input:  "report-<user.id>", wait = false, expire = "10s"
    // Output: Args { key: Some("report-<user.id>"), wait: Some(false), expire_ms: Some(10000), .. }
    pub(crate) fn parse(flavor: Flavor, tokens: TokenStream) -> syn::Result<Args> {
        let parser = |input: ParseStream| {
            let mut args = Args::default();
            let mut seen: Vec<String> = Vec::new();
            let mut first = true;
            while !input.is_empty() {
                if is_option(input) {
                    let entry = Entry {
                        name: input.call(Ident::parse_any)?,
                        value: {
                            input.parse::<Token![=]>()?;
                            input.parse()?
                        },
                    };
                    let name = entry.name.unraw().to_string();
                    let Some(spec) = OPTIONS.iter().find(|o| o.name == name) else {
                        return Err(unknown_option(flavor, &entry.name, &name));
                    };
                    if seen.contains(&name) {
                        return Err(syn::Error::new(
                            entry.name.span(),
                            format!("`{name}` is given twice: remove one of them"),
                        ));
                    }
                    (spec.set)(&mut args, &entry)?;
                    seen.push(name);
                } else {
                    let expr: Expr = input.parse()?;
                    args.key = Some(key(flavor, first, expr)?);
                }
                first = false;
                if input.is_empty() {
                    break;
                }
                input.parse::<Token![,]>()?;
            }
            Ok(args)
        };
        let args = parser.parse2(tokens)?;
        args.check(flavor)?;
        Ok(args)
    }

    /// Options that are fine alone but contradict each other.
    fn check(&self, flavor: Flavor) -> syn::Result<()> {
        if let (Some(wait), Some(wait_for)) = (&self.wait, &self.wait_for_ms)
            && !wait.value
        {
            return Err(syn::Error::new(
                wait_for.name.span(),
                "`wait_for_ms` has no effect with `wait = false`, which never waits: remove one of them",
            ));
        }
        if let Some(delete) = &self.delete_on_exit
            && !delete.value
            && self.expire_ms.is_none()
        {
            return Err(syn::Error::new(
                delete.name.span(),
                format!(
                    "`delete_on_exit = false` keeps the lock until its lease ends, so it needs a lease: add `expire = <seconds>` (or `expire = \"10m\"`) to `{}`",
                    flavor.attr()
                ),
            ));
        }
        Ok(())
    }

    /// Whether the body waits for the lock, as the options and defaults say.
    pub(crate) fn waits(&self, flavor: Flavor) -> bool {
        match &self.wait {
            Some(w) => w.value,
            None => flavor == Flavor::Lock || self.wait_for_ms.is_some(),
        }
    }

    /// Whether failing to take the lock is an error value (`true`) or skips
    /// the body and returns `None` (`false`).
    pub(crate) fn raises(&self, flavor: Flavor) -> bool {
        match &self.raise {
            Some(r) => r.value,
            None => flavor == Flavor::Lock,
        }
    }
}

/// `ident =` (but not `==`) starts an option; anything else is a key attempt.
fn is_option(input: ParseStream) -> bool {
    input.peek(Ident::peek_any) && input.peek2(Token![=]) && !input.peek2(Token![==])
}

fn key(flavor: Flavor, first: bool, expr: Expr) -> syn::Result<LitStr> {
    let attr = flavor.attr();
    if let Expr::Path(p) = &expr
        && let Some(id) = p.path.get_ident()
        && OPTIONS.iter().any(|o| id == o.name)
    {
        return Err(syn::Error::new(
            id.span(),
            format!("`{id}` needs a value, like `{id} = ...`"),
        ));
    }
    if !first {
        return Err(syn::Error::new_spanned(
            &expr,
            format!(
                "expected `option = value` here; the key, if any, is the first argument of `{attr}`"
            ),
        ));
    }
    match strip_group(&expr) {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => Ok(s.clone()),
        _ => Err(syn::Error::new_spanned(
            &expr,
            format!(
                "the lock key must be a string literal, like `{}(\"report-<user.id>\")]`; put arguments in it with `<name>` placeholders, or leave it out to use the function's path",
                attr.trim_end_matches(']')
            ),
        )),
    }
}

fn unknown_option(flavor: Flavor, name: &Ident, text: &str) -> syn::Error {
    let valid = OPTIONS
        .iter()
        .map(|o| o.name)
        .collect::<Vec<_>>()
        .join(", ");
    let hint = match HINTS.iter().find(|(n, _)| *n == text) {
        Some((_, hint)) => format!(": {hint}"),
        None => match closest(text, OPTIONS.iter().map(|o| o.name)) {
            Some(near) => format!(": did you mean `{near}`?"),
            None => String::new(),
        },
    };
    syn::Error::new(
        name.span(),
        format!(
            "unknown option `{text}` for `{}`{hint}; the options are: {valid}",
            flavor.attr()
        ),
    )
}

/// The candidate within a small edit distance of `word`, for "did you mean".
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Edits (insert, delete, substitute, swap two neighbours) from `a` to `b`:
/// a swap is the commonest typo (`wiat`), so it counts as one.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    d[0] = (0..=b.len()).collect();
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

/// Values passed through a `macro_rules!` `$x:expr` arrive wrapped in a
/// `None`-delimited group.
fn strip_group(expr: &Expr) -> &Expr {
    match expr {
        Expr::Group(g) => strip_group(&g.expr),
        Expr::Paren(p) => strip_group(&p.expr),
        other => other,
    }
}

/// What the value of an option turned out to be, for "takes X, not Y".
fn describe(expr: &Expr) -> &'static str {
    match strip_group(expr) {
        Expr::Lit(l) => match &l.lit {
            Lit::Str(_) => "a string",
            Lit::Int(_) => "a number",
            Lit::Float(_) => "a number",
            Lit::Bool(_) => "a boolean",
            _ => "a literal of another kind",
        },
        Expr::Path(_) => "a name",
        _ => "an expression",
    }
}

impl Entry {
    /// Checks the value with `check` and keeps it with the option's spans.
    fn setting<T>(&self, check: fn(&Self) -> syn::Result<T>) -> syn::Result<Setting<T>> {
        Ok(Setting {
            name: self.name.clone(),
            value: check(self)?,
        })
    }

    /// Spanned on the whole value (`-5`, not just `-`).
    fn error(&self, message: impl std::fmt::Display) -> syn::Error {
        syn::Error::new_spanned(&self.value, message)
    }

    fn lit(&self) -> Option<&Lit> {
        match strip_group(&self.value) {
            Expr::Lit(l) => Some(&l.lit),
            _ => None,
        }
    }

    fn string(&self) -> syn::Result<LitStr> {
        match self.lit() {
            Some(Lit::Str(s)) => Ok(s.clone()),
            _ => Err(self.error(format!(
                "`{}` takes a string literal, like `{} = \"reports\"`, not {}",
                self.name,
                self.name,
                describe(&self.value)
            ))),
        }
    }

    /// A label for the holder: a string literal with something in it.
    fn label(&self) -> syn::Result<LitStr> {
        let label = self.string()?;
        if label.value().trim().is_empty() {
            return Err(self.error(format!(
                "`{}` is empty: name who takes the lock, like `{} = \"nightly-report\"`, or leave the option out",
                self.name, self.name
            )));
        }
        Ok(label)
    }

    /// A bare argument name, like `fencing = token`.
    fn ident(&self) -> syn::Result<Ident> {
        match strip_group(&self.value) {
            Expr::Path(p) if p.qself.is_none() => match p.path.get_ident() {
                Some(id) => Ok(id.clone()),
                None => Err(self.error(format!(
                    "`{}` names one argument of the function, like `{} = token`",
                    self.name, self.name
                ))),
            },
            _ => Err(self.error(format!(
                "`{}` names an argument of the function, like `{} = token`, not {}",
                self.name,
                self.name,
                describe(&self.value)
            ))),
        }
    }

    fn on_lost(&self) -> syn::Result<OnLost> {
        let hint = format!(
            "`{}` takes \"cancel\" (stop the body when the lock is lost) or \"ignore\" (keep running, the default)",
            self.name
        );
        match self.lit() {
            Some(Lit::Str(s)) if s.value() == "cancel" => Ok(OnLost::Cancel),
            Some(Lit::Str(s)) if s.value() == "ignore" => Ok(OnLost::Ignore),
            Some(Lit::Str(s)) => Err(self.error(format!("{hint}, not \"{}\"", s.value()))),
            _ => Err(self.error(format!("{hint}, not {}", describe(&self.value)))),
        }
    }

    fn boolean(&self) -> syn::Result<bool> {
        match self.lit() {
            Some(Lit::Bool(LitBool { value, .. })) => Ok(*value),
            _ => Err(self.error(format!(
                "`{}` takes `true` or `false`, not {}",
                self.name,
                describe(&self.value)
            ))),
        }
    }

    /// A whole number of milliseconds, greater than zero.
    fn millis(&self) -> syn::Result<u64> {
        let name = &self.name;
        self.reject_negative()?;
        let ms = match self.lit() {
            Some(Lit::Int(i)) => {
                check_int_suffix(
                    i,
                    &format!(
                        "`{name}` is in milliseconds already: write `{name} = {}`",
                        i.base10_digits()
                    ),
                )?;
                i.base10_parse::<u64>().map_err(|_| {
                    self.error(format!(
                        "`{name}` is too large for a number of milliseconds"
                    ))
                })?
            }
            Some(Lit::Str(s)) => {
                return Err(self.error(format!(
                    "`{name}` takes a whole number of milliseconds without quotes, like `{name} = 500`, not a string{}",
                    match s.value().trim().parse::<u64>() {
                        Ok(n) => format!(": write `{name} = {n}`"),
                        Err(_) => String::new(),
                    }
                )));
            }
            _ => {
                return Err(self.error(format!(
                    "`{name}` takes a whole number of milliseconds, like `{name} = 500`, not {}",
                    describe(&self.value)
                )));
            }
        };
        if ms == 0 {
            let what = if name == "wait_for_ms" {
                "to not wait at all, use `wait = false` instead"
            } else {
                "leave it out to never steal the lock"
            };
            return Err(self.error(format!("`{name}` must be greater than zero: {what}")));
        }
        Ok(ms)
    }

    /// `expire`: seconds as a number, or a string with a unit; in whole
    /// milliseconds (rounded down), at least one.
    fn duration(&self) -> syn::Result<u64> {
        let name = &self.name;
        self.reject_negative()?;
        let usage = "takes seconds (`expire = 30`, `expire = 1.5`) or a duration string (`expire = \"1500ms\"`, `\"10s\"`, `\"5m\"`, `\"1h\"`)";
        let ms = match self.lit() {
            Some(Lit::Int(i)) => {
                check_int_suffix(
                    i,
                    &format!(
                        "write a duration with a unit as a string: `{name} = \"{}{}\"`",
                        i.base10_digits(),
                        i.suffix()
                    ),
                )?;
                decimal_millis(i.base10_digits(), 1000)
            }
            Some(Lit::Float(f)) => match f.suffix() {
                "" | "f32" | "f64" => decimal_millis(f.base10_digits(), 1000),
                _ => None,
            }
            .ok_or_else(|| self.error(format!("`{name}` {usage}")))
            .map(Some)?,
            Some(Lit::Str(s)) => {
                let text = s.value();
                let (number, unit) = split_unit(&text);
                let scale = match unit {
                    "ms" => 1,
                    "s" => 1000,
                    "m" => 60_000,
                    "h" => 3_600_000,
                    _ => 0,
                };
                match decimal_millis(number, scale) {
                    Some(ms) if scale > 0 => Some(ms),
                    _ if scale == 0 && !number.is_empty() && !unit.is_empty() => {
                        return Err(self.error(format!(
                            "`{text}` is not a duration: `{}` is not a unit; use `ms`, `s`, `m` or `h`, like `{name} = \"10s\"`",
                            unit.trim()
                        )));
                    }
                    _ => {
                        return Err(self.error(format!(
                            "`{text}` is not a duration: write a number followed by `ms`, `s`, `m` or `h`, like `{name} = \"1500ms\"` or `{name} = \"10s\"`"
                        )));
                    }
                }
            }
            _ => {
                return Err(self.error(format!("`{name}` {usage}, not {}", describe(&self.value))));
            }
        };
        match ms.map(u64::try_from) {
            None => Err(self.error(format!("`{name}` {usage}"))),
            Some(Err(_)) => Err(self.error(format!("`{name}` is too long"))),
            Some(Ok(0)) => Err(self.error(format!(
                "`{name}` must be at least 1 ms: a lock that expires at once protects nothing"
            ))),
            Some(Ok(ms)) => Ok(ms),
        }
    }

    /// `crate = "path"` (tokio-macros' form) or `crate = path`.
    fn path(&self) -> syn::Result<Path> {
        let usage = "`crate` takes the path of the runtime crate, like `crate = \"my_reexport::lock_runtime\"`";
        match strip_group(&self.value) {
            Expr::Lit(ExprLit {
                lit: Lit::Str(s), ..
            }) => s
                .parse::<Path>()
                .map_err(|_| self.error(format!("`{}` is not a path: {usage}", s.value()))),
            Expr::Path(p) if p.qself.is_none() && p.attrs.is_empty() => Ok(p.path.clone()),
            _ => Err(self.error(usage)),
        }
    }

    fn reject_negative(&self) -> syn::Result<()> {
        if let Expr::Unary(ExprUnary {
            op: UnOp::Neg(_), ..
        }) = strip_group(&self.value)
        {
            return Err(self.error(format!(
                "`{}` cannot be negative: give a duration greater than zero",
                self.name
            )));
        }
        Ok(())
    }
}

/// Integer literals may carry an integer type suffix (`500u64`); any other
/// suffix (`500ms`, `10s`) is a unit the user meant, which we explain.
fn check_int_suffix(lit: &syn::LitInt, hint: &str) -> syn::Result<()> {
    match lit.suffix() {
        "" | "u8" | "u16" | "u32" | "u64" | "u128" | "usize" | "i8" | "i16" | "i32" | "i64"
        | "i128" | "isize" => Ok(()),
        _ => Err(syn::Error::new(lit.span(), hint)),
    }
}

/// `"1500ms"` -> (`"1500"`, `"ms"`).
fn split_unit(text: &str) -> (&str, &str) {
    let at = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(text.len());
    (&text[..at], &text[at..])
}

/// A plain decimal (`"1.5"`, `"1_000"`) times `scale` milliseconds, rounded
/// down, in integer arithmetic so that `0.1` seconds is exactly 100 ms.
/// `None` for anything else (exponents, two dots, no digits).
fn decimal_millis(text: &str, scale: u64) -> Option<u128> {
    // Past this many digits the value is too long anyway, and further
    // fraction digits cannot change whole milliseconds.
    const MAX_DIGITS: usize = 25;
    let text: String = text.chars().filter(|&c| c != '_').collect();
    let (whole, frac) = text.split_once('.').unwrap_or((&text, ""));
    let is_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && frac.is_empty()) || !is_digits(whole) || !is_digits(frac) {
        return None;
    }
    let whole = whole.trim_start_matches('0');
    if whole.len() > MAX_DIGITS {
        return Some(u128::MAX);
    }
    let whole: u128 = whole.parse().unwrap_or(0);
    let frac = &frac[..frac.len().min(MAX_DIGITS)];
    let frac_ms = match frac.parse::<u128>() {
        Ok(digits) => digits * u128::from(scale) / 10u128.pow(frac.len() as u32),
        Err(_) => 0,
    };
    Some(whole * u128::from(scale) + frac_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::{ToTokens, quote};

    fn parse(tokens: TokenStream) -> Result<Args, String> {
        Args::parse(Flavor::Lock, tokens).map_err(|e| e.to_string())
    }

    fn parse_err(tokens: &TokenStream) -> String {
        match parse(tokens.clone()) {
            Ok(_) => panic!("{tokens} parsed"),
            Err(e) => e,
        }
    }

    fn expire(value: TokenStream) -> Result<u64, String> {
        parse(quote!(expire = #value)).map(|a| a.expire_ms.unwrap().value)
    }

    #[test]
    fn expire_accepts_seconds_and_unit_strings() {
        assert_eq!(expire(quote!(30)), Ok(30_000));
        assert_eq!(expire(quote!(1.5)), Ok(1500));
        assert_eq!(expire(quote!(0.1)), Ok(100));
        assert_eq!(expire(quote!("1500ms")), Ok(1500));
        assert_eq!(expire(quote!("10s")), Ok(10_000));
        assert_eq!(expire(quote!("2.5s")), Ok(2500));
        assert_eq!(expire(quote!("5m")), Ok(300_000));
        assert_eq!(expire(quote!("1h")), Ok(3_600_000));
        assert_eq!(expire(quote!("1_000ms")), Ok(1000));
        // Rounded down to whole milliseconds, at least one.
        assert_eq!(expire(quote!("1.9ms")), Ok(1));
        assert!(
            expire(quote!("0.5ms"))
                .unwrap_err()
                .contains("at least 1 ms")
        );
        assert!(expire(quote!(0)).unwrap_err().contains("at least 1 ms"));
    }

    #[test]
    fn expire_rejects_what_is_not_a_duration() {
        for (value, says) in [
            (quote!("10 parsecs"), "`parsecs` is not a unit"),
            (quote!("10"), "write a number followed by"),
            (quote!("ms"), "write a number followed by"),
            (quote!("1.2.3s"), "write a number followed by"),
            (quote!(-1), "cannot be negative"),
            (quote!(10s), "as a string: `expire = \"10s\"`"),
            (quote!(1e3), "takes seconds"),
            (quote!(true), "not a boolean"),
            (quote!("99999999999999999999999h"), "too long"),
        ] {
            let err = expire(value.clone()).unwrap_err();
            assert!(err.contains(says), "{value}: {err}");
        }
    }

    #[test]
    fn millisecond_options_take_whole_positive_numbers() {
        let a = parse(quote!(wait_for_ms = 500, steal_after_ms = 1_000u64)).unwrap();
        assert_eq!(a.wait_for_ms.unwrap().value, 500);
        assert_eq!(a.steal_after_ms.unwrap().value, 1000);
        for (tokens, says) in [
            (quote!(wait_for_ms = "500"), "write `wait_for_ms = 500`"),
            (quote!(wait_for_ms = 500ms), "in milliseconds already"),
            (quote!(wait_for_ms = 1.5), "whole number of milliseconds"),
            (quote!(steal_after_ms = 0), "never steal"),
            (quote!(wait_for_ms = 99999999999999999999999), "too large"),
        ] {
            let err = parse_err(&tokens);
            assert!(err.contains(says), "{tokens}: {err}");
        }
    }

    #[test]
    fn the_key_comes_first_and_options_need_values() {
        let a = parse(quote!("k-<a>", wait = false)).unwrap();
        assert_eq!(a.key.unwrap().value(), "k-<a>");
        for (tokens, says) in [
            (
                quote!(wait = false, "k"),
                "the key, if any, is the first argument",
            ),
            (quote!(wait), "`wait` needs a value"),
            (quote!(format!("k")), "must be a string literal"),
            (quote!(wiat = true), "did you mean `wait`?"),
            (quote!(ttl = 5), "use `expire = <seconds>`"),
            (quote!(key = "k"), "the key is the first argument"),
            (quote!(prefix = "p"), "set it with registry::configure"),
            (quote!(alias = 3), "`alias` takes a string literal"),
            (quote!(crate = 3), "`crate` takes the path"),
            (quote!(crate = "not a path"), "is not a path"),
        ] {
            let err = parse_err(&tokens);
            assert!(err.contains(says), "{tokens}: {err}");
        }
    }

    #[test]
    fn crate_takes_a_path_or_a_string() {
        let a = parse(quote!(crate = ::my::runtime)).unwrap();
        let b = parse(quote!(crate = "::my::runtime")).unwrap();
        let path = |a: Args| a.krate.unwrap().value.to_token_stream().to_string();
        assert_eq!(path(a), path(b));
    }

    #[test]
    fn defaults_differ_between_lock_and_once() {
        let none = Args::default();
        assert!(none.waits(Flavor::Lock) && none.raises(Flavor::Lock));
        assert!(!none.waits(Flavor::Once) && !none.raises(Flavor::Once));
        let wait_for = Args::parse(Flavor::Once, quote!(wait_for_ms = 5)).unwrap();
        assert!(wait_for.waits(Flavor::Once), "wait_for_ms implies waiting");
    }

    #[test]
    fn every_hint_names_an_option_that_is_not_one() {
        for (name, _) in HINTS {
            assert!(OPTIONS.iter().all(|o| o.name != *name), "{name}");
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn tokens(text: &str) -> Option<TokenStream> {
            text.parse().ok()
        }

        /// `ms` written every way that names it exactly: as milliseconds,
        /// as seconds with a fraction, in whole minutes or hours when it is
        /// one, as a number of seconds, with `_` separators.
        fn spellings(ms: u64) -> Vec<String> {
            let mut out = vec![
                format!("\"{ms}ms\""),
                format!("\"{}.{:03}s\"", ms / 1000, ms % 1000),
                format!("{}.{:03}", ms / 1000, ms % 1000),
            ];
            if ms.is_multiple_of(1000) {
                out.push(format!("{}", ms / 1000));
                out.push(format!("\"{}s\"", ms / 1000));
            }
            if ms.is_multiple_of(60_000) {
                out.push(format!("\"{}m\"", ms / 60_000));
            }
            if ms.is_multiple_of(3_600_000) {
                out.push(format!("\"{}h\"", ms / 3_600_000));
            }
            // `1_500ms`: separators anywhere between digits.
            let digits = ms.to_string();
            let grouped: String = digits
                .chars()
                .enumerate()
                .flat_map(|(i, c)| {
                    (i > 0 && (digits.len() - i).is_multiple_of(3))
                        .then_some('_')
                        .into_iter()
                        .chain([c])
                })
                .collect();
            out.push(format!("\"{grouped}ms\""));
            out
        }

        fn millis() -> impl Strategy<Value = u64> {
            prop_oneof![
                1..10_000u64,
                1..u64::MAX / 1000,
                (1..1_000_000u64).prop_map(|m| m * 60_000),
                (1..100_000u64).prop_map(|h| h * 3_600_000),
                Just(u64::MAX),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Every exact spelling of a duration parses to its milliseconds.
            #[test]
            fn durations_round_trip_through_every_spelling(ms in millis()) {
                for text in spellings(ms) {
                    let value = tokens(&text).unwrap();
                    // Seconds past what a float literal holds exactly are
                    // still read digit by digit, never through an f64.
                    prop_assert_eq!(expire(value), Ok(ms), "{}", text);
                }
            }

            /// A fraction finer than a millisecond rounds down, never up.
            #[test]
            fn sub_millisecond_fractions_round_down(ms in 1..1_000_000u64, sub in 1..1000u32) {
                let text = format!("\"{}.{:03}{sub:03}s\"", ms / 1000, ms % 1000);
                prop_assert_eq!(expire(tokens(&text).unwrap()), Ok(ms), "{}", text);
            }

            /// Any string is a duration or refused with a message naming
            /// it; none panics, and none is accepted as zero.
            #[test]
            fn any_duration_string_parses_or_is_refused(
                text in prop_oneof![
                    any::<String>(),
                    "[0-9._]{0,6}[a-z ]{0,3}",
                    "[0-9]{1,30}(ms|s|m|h)",
                ]
            ) {
                let lit = syn::LitStr::new(&text, proc_macro2::Span::call_site());
                match expire(lit.into_token_stream()) {
                    Ok(ms) => {
                        prop_assert!(ms >= 1);
                        let (number, unit) = split_unit(&text);
                        prop_assert!(["ms", "s", "m", "h"].contains(&unit), "{:?} accepted", text);
                        prop_assert!(number.bytes().any(|b| b.is_ascii_digit()), "{:?} accepted", text);
                    }
                    Err(e) => prop_assert!(
                        e.contains(&format!("`{text}`")) || e.contains("`expire`"),
                        "{:?}: {}", text, e
                    ),
                }
            }

            /// A number with a unit that is not one names the unit.
            #[test]
            fn unknown_units_are_named(n in 1..1000u32, unit in "[a-z]{1,5}") {
                prop_assume!(!["ms", "s", "m", "h"].contains(&unit.as_str()));
                let text = format!("\"{n}{unit}\"");
                let e = expire(tokens(&text).unwrap()).unwrap_err();
                prop_assert!(e.contains(&format!("`{unit}` is not a unit")), "{}: {}", text, e);
            }

            /// Millisecond options take any whole positive number, and
            /// refuse it quoted or with a unit, telling what to write.
            #[test]
            fn millisecond_options_round_trip(ms in 1..=u64::MAX) {
                let a = parse(tokens(&format!("wait_for_ms = {ms}, steal_after_ms = {ms}u64")).unwrap()).unwrap();
                prop_assert_eq!(a.wait_for_ms.unwrap().value, ms);
                prop_assert_eq!(a.steal_after_ms.unwrap().value, ms);
                let e = parse_err(&tokens(&format!("wait_for_ms = \"{ms}\"")).unwrap());
                prop_assert!(e.contains(&format!("write `wait_for_ms = {ms}`")), "{}", e);
                let e = parse_err(&tokens(&format!("steal_after_ms = {ms}ms")).unwrap());
                prop_assert!(e.contains(&format!("write `steal_after_ms = {ms}`")), "{}", e);
            }

            /// Whatever follows an option's `=` (any tokens that lex), the
            /// options parse or give an error; no input panics.
            #[test]
            fn any_option_value_parses_or_is_refused(
                name in prop_oneof![Just("expire"), Just("wait_for_ms"), Just("steal_after_ms"), Just("wait"), Just("crate"), Just("fair")],
                value in prop_oneof![any::<String>(), "[-0-9.a-z\"_ ]{0,8}"],
            ) {
                let Some(t) = tokens(&format!("{name} = {value}")) else {
                    return Ok(());
                };
                if let Err(e) = parse(t) {
                    prop_assert!(!e.is_empty());
                }
            }
        }
    }
}
