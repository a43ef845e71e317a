//! The key template: literal text with `<name>` placeholders naming the
//! function's arguments (`<user.id>`, `<pair.0>`, `<self.id>`), checked
//! against the signature and turned into one `__private::render_key` call
//! whose tokens carry the key literal's span, so errors point at the key.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::visit::Visit;
use syn::{FnArg, Ident, Index, LitStr, Member, PatIdent, Path, Signature};

/// The parsed template: text runs and placeholders, in order.
struct Template {
    parts: Vec<Part>,
}

enum Part {
    Text(String),
    /// `<root.a.0>`: the argument, then the fields to follow. `source` is the
    /// placeholder as written, for messages.
    Placeholder {
        source: String,
        root: String,
        fields: Vec<Field>,
    },
}

enum Field {
    Named(String),
    Index(u32),
}

// Input:  "report-<user.id>-<<{day}>>"
// Output: [Text("report-"), Placeholder(user.id), Text("-<{day}>")]
fn parse(text: &str, span: Span) -> syn::Result<Template> {
    let error = |message: String| Err(syn::Error::new(span, message));
    let mut parts = Vec::new();
    let mut run = String::new();
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        match c {
            '<' if chars.peek().is_some_and(|&(_, n)| n == '<') => {
                chars.next();
                run.push('<');
            }
            '>' if chars.peek().is_some_and(|&(_, n)| n == '>') => {
                chars.next();
                run.push('>');
            }
            '>' => {
                return error(format!(
                    "unmatched `>` in the lock key `{text}`: write `>>` for a literal `>`"
                ));
            }
            '<' => {
                let rest = &text[at + 1..];
                let Some(end) = rest
                    .find(['<', '>'])
                    .filter(|&e| rest[e..].starts_with('>'))
                else {
                    return error(format!(
                        "unclosed `<` in the lock key `{text}`: close the placeholder with `>`, or write `<<` for a literal `<`"
                    ));
                };
                let inner = &rest[..end];
                for _ in 0..inner.chars().count() + 1 {
                    chars.next();
                }
                if !run.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut run)));
                }
                parts.push(placeholder(inner).map_err(|m| syn::Error::new(span, m))?);
            }
            c => run.push(c),
        }
    }
    if !run.is_empty() {
        parts.push(Part::Text(run));
    }
    Ok(Template { parts })
}

fn placeholder(inner: &str) -> Result<Part, String> {
    if inner.is_empty() {
        return Err("empty placeholder `<>` in the lock key: name an argument inside it, like `<user>`, or write `<<>>` for a literal `<>`".into());
    }
    let malformed = |why: &str| {
        Err(format!(
            "malformed placeholder `<{inner}>` in the lock key: {why}; write an argument name, optionally followed by `.field` or `.0` parts, like `<user.id>`"
        ))
    };
    let mut segments = inner.split('.');
    let root = segments.next().unwrap_or_default();
    if !is_identifier(root) {
        return malformed(&format!("`{root}` is not an argument name"));
    }
    let mut fields = Vec::new();
    for seg in segments {
        if seg.is_empty() {
            return malformed("it has an empty `.` part");
        }
        if seg.bytes().all(|b| b.is_ascii_digit()) {
            match seg.parse::<u32>() {
                Ok(i) if seg == "0" || !seg.starts_with('0') => fields.push(Field::Index(i)),
                _ => return malformed(&format!("`{seg}` is not a tuple index")),
            }
        } else if is_identifier(seg) && !is_keyword(seg) {
            fields.push(Field::Named(seg.to_owned()));
        } else {
            return malformed(&format!("`{seg}` is not a field name"));
        }
    }
    Ok(Part::Placeholder {
        source: format!("<{inner}>"),
        root: root.to_owned(),
        fields,
    })
}

/// Checked before any `Ident::new`, which panics on anything else.
fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c == '_' || unicode_ident::is_xid_start(c) => {
            chars.all(unicode_ident::is_xid_continue) && s != "_"
        }
        _ => false,
    }
}

/// Keywords cannot be field names (`user.type` does not parse); `self` is
/// allowed as the root only, where the receiver provides it.
fn is_keyword(s: &str) -> bool {
    const KEYWORDS: &[&str] = &[
        "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum",
        "extern", "false", "fn", "for", "gen", "if", "impl", "in", "let", "loop", "match", "mod",
        "move", "mut", "pub", "ref", "return", "self", "Self", "static", "struct", "super",
        "trait", "true", "type", "unsafe", "use", "where", "while", "abstract", "become", "box",
        "do", "final", "macro", "override", "priv", "typeof", "unsized", "virtual", "yield", "try",
    ];
    KEYWORDS.contains(&s)
}

/// The names a signature binds: the receiver's `self` and every identifier in
/// the parameter patterns, destructuring included.
struct Bindings {
    receiver: Option<Ident>,
    names: Vec<Ident>,
}

impl<'ast> Visit<'ast> for Bindings {
    fn visit_pat_ident(&mut self, pat: &'ast PatIdent) {
        self.names.push(pat.ident.clone());
        syn::visit::visit_pat_ident(self, pat);
    }
}

fn bindings(sig: &Signature) -> Bindings {
    let mut b = Bindings {
        receiver: None,
        names: Vec::new(),
    };
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(r) => {
                b.receiver = Some(Ident::new("self", r.self_token.span));
            }
            // Only the pattern binds; the type cannot.
            FnArg::Typed(t) => b.visit_pat(&t.pat),
        }
    }
    b
}

impl Bindings {
    fn find(&self, name: &str) -> Option<&Ident> {
        if name == "self" {
            return self.receiver.as_ref();
        }
        self.names.iter().find(|i| i.unraw() == name)
    }

    fn listed(&self) -> Vec<String> {
        let mut all: Vec<String> = self.receiver.iter().map(|_| "self".to_owned()).collect();
        all.extend(self.names.iter().map(|i| i.unraw().to_string()));
        all
    }
}

// Input:  "report-<user.id>-{<day>}" on fn build_report(user: &User, day: u32)
// Output: ::lock_runtime::__private::render_key("report-",
//             &[(key_part(&user.id), "-{"), (key_part(&day), "}")])
//         (or the bare literal when there is no placeholder)
//
// `render_key` escapes each value but the last so that different values
// never render to the same key; see its documentation for the rule.
pub(crate) fn key_expr(
    key: &LitStr,
    sig: &Signature,
    krate: &Path,
    fencing: Option<&Ident>,
) -> syn::Result<TokenStream> {
    let span = key.span();
    let text = key.value();
    let template = parse(&text, span)?;
    if template.parts.is_empty() {
        return Err(syn::Error::new(
            span,
            "the lock key is empty: give the lock a name, or leave the key out to use the function's path",
        ));
    }
    let bound = bindings(sig);
    let fn_name = &sig.ident;
    let mut prefix = String::new();
    // Each placeholder's value, then the text up to the next placeholder.
    let mut values: Vec<(TokenStream, String)> = Vec::new();
    let mut previous: Option<&str> = None;
    for part in &template.parts {
        let Part::Placeholder {
            source,
            root,
            fields,
        } = part
        else {
            if let Part::Text(run) = part {
                match values.last_mut() {
                    Some((_, after)) => after.push_str(run),
                    None => prefix.push_str(run),
                }
            }
            previous = None;
            continue;
        };
        if let Some(before) = previous {
            return Err(syn::Error::new(
                span,
                format!(
                    "`{before}` and `{source}` touch in the lock key `{text}`: put a separator between them, like `{before}-{source}`, so that the key shows where one value ends: otherwise `1` and `23` would take the same lock as `12` and `3`"
                ),
            ));
        }
        previous = Some(source);
        if fencing.is_some_and(|f| f.unraw() == root) {
            return Err(syn::Error::new(
                span,
                format!(
                    "`{source}` cannot go in the lock key: `{root}` is the `fencing` argument, and its value, the fencing token, is handed out by the lock only after the lock is taken with this key; name the resource with other arguments"
                ),
            ));
        }
        let Some(ident) = bound.find(root) else {
            return Err(syn::Error::new(
                span,
                unknown(source, root, fields, &bound, fn_name),
            ));
        };
        // Resolve as the parameter does (its hygiene), but report errors
        // such as "not Display" at the key.
        let mut base = ident.clone();
        base.set_span(ident.span().located_at(span));
        let members = fields.iter().map(|f| match f {
            Field::Named(n) => Member::Named(Ident::new(n, span)),
            Field::Index(i) => Member::Unnamed(Index { index: *i, span }),
        });
        // Through `key_part`, whose diagnostic explains a value that is not
        // `Display` better than a bare `&dyn Display` coercion would.
        let key_part = crate::expand::respan(quote!(#krate::__private::key_part), span);
        values.push((
            quote_spanned!(span=> #key_part(&#base #(.#members)*)),
            String::new(),
        ));
    }
    if values.is_empty() {
        // Nothing substituted: the key is a literal, with no allocation.
        return Ok(LitStr::new(&prefix, span).into_token_stream());
    }
    let render = crate::expand::respan(quote!(#krate::__private::render_key), span);
    let prefix = LitStr::new(&prefix, span);
    let parts = values.iter().map(|(value, after)| {
        let after = LitStr::new(after, span);
        quote_spanned!(span=> (#value, #after))
    });
    Ok(quote_spanned!(span=> #render(#prefix, &[#(#parts),*])))
}

fn unknown(
    source: &str,
    root: &str,
    fields: &[Field],
    bound: &Bindings,
    fn_name: &Ident,
) -> String {
    let names = bound.listed();
    let which = if fields.is_empty() {
        format!("`{source}` is not an argument of `{fn_name}`")
    } else {
        format!("`{root}` in `{source}` is not an argument of `{fn_name}`")
    };
    if root == "self" {
        let others = if names.is_empty() {
            String::from("it has no arguments")
        } else {
            format!("its arguments are: {}", names.join(", "))
        };
        return format!("`{source}` needs a `self` receiver, and `{fn_name}` has none; {others}");
    }
    match crate::args::closest(root, names.iter().map(String::as_str)) {
        Some(near) if names.len() > 1 => format!(
            "{which}: did you mean `{near}`? its arguments are: {}",
            names.join(", ")
        ),
        _ if names.is_empty() => format!("{which}: it has no arguments"),
        _ => format!("{which}; its arguments are: {}", names.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    fn key(template: &str, sig: Signature) -> Result<String, String> {
        let lit = LitStr::new(template, Span::call_site());
        key_expr(&lit, &sig, &parse_quote!(::lock_runtime), None)
            .map(|t| t.to_string())
            .map_err(|e| e.to_string())
    }

    fn err(template: &str) -> String {
        key(
            template,
            parse_quote!(fn build_report(user: &User, day: u32)),
        )
        .expect_err(template)
    }

    #[test]
    fn placeholders_become_values_with_the_text_after_them() {
        let sig: Signature = parse_quote!(fn f(user: &User, pair: (u8, u8)));
        let out = key("a-<user.id>-<pair.1>-{x}", sig).unwrap();
        assert!(out.contains(r#"render_key ("a-" , & ["#), "{out}");
        assert!(out.contains(r#"(& user . id) , "-")"#), "{out}");
        assert!(out.contains(r#"(& pair . 1) , "-{x}")"#), "{out}");
        assert!(out.contains("key_part (& user . id)"), "{out}");
    }

    #[test]
    fn touching_placeholders_and_the_fencing_argument_are_rejected() {
        let sig: Signature = parse_quote!(fn f(x: u8, y: u8));
        let e = key("k-<x><y>", sig).unwrap_err();
        assert!(e.contains("`<x>` and `<y>` touch"), "{e}");
        assert!(e.contains("like `<x>-<y>`"), "{e}");
        let lit = LitStr::new("k-<token>", Span::call_site());
        let token: Ident = parse_quote!(token);
        let sig: Signature = parse_quote!(fn f(x: u8));
        let e = key_expr(&lit, &sig, &parse_quote!(::lock_runtime), Some(&token))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`token` is the `fencing` argument"), "{e}");
    }

    #[test]
    fn a_key_without_placeholders_is_a_plain_literal() {
        let out = key("a-<<{b}>>", parse_quote!(fn f())).unwrap();
        assert_eq!(out, r#""a-<{b}>""#);
    }

    #[test]
    fn malformed_templates_say_what_to_write() {
        for (template, says) in [
            (
                "r-<usr>",
                "`<usr>` is not an argument of `build_report`: did you mean `user`?",
            ),
            (
                "r-<zzz.id>",
                "`zzz` in `<zzz.id>` is not an argument of `build_report`; its arguments are: user, day",
            ),
            ("r-<day", "write `<<` for a literal `<`"),
            ("r-<a<b>", "unclosed `<`"),
            ("r->", "write `>>` for a literal `>`"),
            ("r-<>", "empty placeholder"),
            ("r-<user..id>", "empty `.` part"),
            ("r-<1x>", "`1x` is not an argument name"),
            ("r-<user.01>", "`01` is not a tuple index"),
            ("r-<user.type>", "`type` is not a field name"),
            ("r-<user.id()>", "`id()` is not a field name"),
            ("r-< user >", "malformed placeholder"),
            ("r-<self.id>", "needs a `self` receiver"),
            ("", "the lock key is empty"),
        ] {
            let e = err(template);
            assert!(e.contains(says), "{template}: {e}");
        }
    }

    #[test]
    fn names_bound_by_patterns_and_the_receiver_are_arguments() {
        let sig: Signature =
            parse_quote!(fn f(&self, (a, b): (u8, u8), P { x, y: why }: P, r#type: u8, _: u8));
        assert!(key("<self.id>-<a>-<b>-<x>-<why>-<type>", sig.clone()).is_ok());
        let e = key("<y>", sig).unwrap_err();
        assert!(
            e.contains("its arguments are: self, a, b, x, why, type"),
            "{e}"
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// The template text that parses to `parts`: literal `<` and `>`
        /// doubled, placeholders as written.
        fn unparse(parts: &[Part]) -> String {
            let mut out = String::new();
            for part in parts {
                match part {
                    Part::Text(t) => out.push_str(&t.replace('<', "<<").replace('>', ">>")),
                    Part::Placeholder { source, .. } => out.push_str(source),
                }
            }
            out
        }

        fn describe(parts: &[Part]) -> Vec<String> {
            parts
                .iter()
                .map(|p| match p {
                    Part::Text(t) => format!("text {t:?}"),
                    Part::Placeholder { root, fields, .. } => {
                        let fields: Vec<String> = fields
                            .iter()
                            .map(|f| match f {
                                Field::Named(n) => n.clone(),
                                Field::Index(i) => i.to_string(),
                            })
                            .collect();
                        format!("placeholder {root} {fields:?}")
                    }
                })
                .collect()
        }

        /// Text heavy in the characters the grammar cares about.
        fn template_text() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<String>(),
                proptest::collection::vec(
                    prop_oneof![
                        Just('<'),
                        Just('>'),
                        Just('.'),
                        Just('_'),
                        Just('0'),
                        Just('1'),
                        Just(' '),
                        Just('-'),
                        Just('é'),
                        Just('ß'),
                        prop::char::range('a', 'e'),
                    ],
                    0..24
                )
                .prop_map(|c| c.into_iter().collect()),
            ]
        }

        fn identifier() -> impl Strategy<Value = String> {
            prop_oneof![
                "[a-z_][a-z0-9_]{0,6}",
                "[A-Z][a-zA-Z0-9]{0,4}",
                Just("é".to_owned()),
                Just("données".to_owned()),
            ]
            .prop_filter("`_` alone is no name", |s| s != "_")
        }

        fn field() -> impl Strategy<Value = String> {
            prop_oneof![
                identifier().prop_filter("keywords are no field names", |s| !is_keyword(s)),
                any::<u32>().prop_map(|i| i.to_string()),
            ]
        }

        fn placeholder_source() -> impl Strategy<Value = String> {
            (identifier(), proptest::collection::vec(field(), 0..4)).prop_map(|(root, fields)| {
                let mut s = format!("<{root}");
                for f in fields {
                    s.push('.');
                    s.push_str(&f);
                }
                s.push('>');
                s
            })
        }

        /// Text runs (any characters, escaped) and placeholders, in any order.
        fn valid_template() -> impl Strategy<Value = String> {
            proptest::collection::vec(
                prop_oneof![
                    any::<String>().prop_map(|t| t.replace('<', "<<").replace('>', ">>")),
                    placeholder_source(),
                ],
                0..6,
            )
            .prop_map(|parts| parts.concat())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1024))]

            /// Any text parses or is refused with a message; what parses
            /// is exactly the text again, with no two text runs in a row.
            #[test]
            fn any_text_parses_back_to_itself_or_is_refused(text in template_text()) {
                match parse(&text, Span::call_site()) {
                    Ok(t) => {
                        prop_assert_eq!(unparse(&t.parts), text.clone());
                        prop_assert!(
                            t.parts.windows(2).all(|w| !matches!(w, [Part::Text(_), Part::Text(_)])),
                            "two text runs in a row: {:?}", describe(&t.parts)
                        );
                    }
                    Err(e) => {
                        let e = e.to_string();
                        prop_assert!(e.contains("lock key"), "{}: {}", text, e);
                    }
                }
            }

            /// Templates written by the grammar parse, to the placeholders
            /// they were written with.
            #[test]
            fn grammatical_templates_parse(text in valid_template()) {
                let t = parse(&text, Span::call_site()).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(unparse(&t.parts), text.clone());
                for part in &t.parts {
                    if let Part::Placeholder { source, root, fields } = part {
                        let mut written = source[1..source.len() - 1].split('.');
                        prop_assert_eq!(written.next(), Some(root.as_str()));
                        for (f, w) in fields.iter().zip(written) {
                            match f {
                                Field::Named(n) => prop_assert_eq!(n.as_str(), w),
                                Field::Index(i) => prop_assert_eq!(i.to_string(), w),
                            }
                        }
                    }
                }
            }

            /// A placeholder is accepted exactly when the Rust field access
            /// it stands for parses as one (`x.a.0`, never `x.01` or
            /// `x.type`), member by member.
            #[test]
            fn placeholders_are_the_field_accesses_rust_accepts(
                inner in proptest::collection::vec(
                    prop_oneof![field(), "[a-z0-9_.]{0,3}", Just("type".to_owned()), Just("01".to_owned()), Just("1x".to_owned())],
                    1..4,
                ).prop_map(|p| p.join("."))
            ) {
                let text = format!("k-<x.{inner}>");
                let rust = syn::parse_str::<syn::Expr>(&format!("x.{inner}"));
                let members = |e: &syn::Expr| {
                    let mut out = Vec::new();
                    let mut e = e;
                    while let syn::Expr::Field(f) = e {
                        out.push(match &f.member {
                            Member::Named(n) => n.to_string(),
                            Member::Unnamed(i) => i.index.to_string(),
                        });
                        e = &f.base;
                    }
                    out.reverse();
                    out
                };
                match parse(&text, Span::call_site()) {
                    Ok(t) => {
                        let Some(Part::Placeholder { fields, .. }) = t.parts.last() else {
                            return Err(TestCaseError::fail("no placeholder"));
                        };
                        let rust = rust.map_err(|e| TestCaseError::fail(format!("`x.{inner}` is no Rust: {e}")))?;
                        let ours: Vec<String> = fields.iter().map(|f| match f {
                            Field::Named(n) => n.clone(),
                            Field::Index(i) => i.to_string(),
                        }).collect();
                        prop_assert_eq!(&ours, &members(&rust));
                        // Each member exactly as written: `x.01` is no `x.1`.
                        prop_assert_eq!(ours, inner.split('.').collect::<Vec<_>>());
                    }
                    Err(e) => {
                        let e = e.to_string();
                        prop_assert!(e.contains(&format!("<x.{inner}>")), "{}", e);
                        // What Rust accepts as `x.<members>` with canonical,
                        // identifier or index members, we accept too.
                        let canonical = inner.split('.').all(|seg| {
                            (!seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit())
                                && (seg == "0" || !seg.starts_with('0'))
                                && seg.parse::<u32>().is_ok())
                                || (is_identifier(seg) && !is_keyword(seg))
                        });
                        prop_assert!(!canonical, "`{}` was refused: {}", inner, e);
                    }
                }
            }
        }
    }
}
