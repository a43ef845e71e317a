//! Code generation: the function keeps its signature (but for `Option<T>`
//! when the body may be skipped) and its body; the body runs after a guard is
//! taken into a hygienic local, so that RAII releases the lock on every path.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::visit::Visit;
use syn::{
    Attribute, Block, Expr, FnArg, GenericArgument, Ident, ItemFn, LitInt, Path, PathArguments,
    ReturnType, Signature, Stmt, TraitItemFn, Type, TypeParamBound, parse_quote,
};

use crate::args::{Args, Flavor, OnLost};
use crate::template;

/// Parses, checks and expands; any error is the caller's to report next to
/// the untouched item.
pub(crate) fn expand(
    flavor: Flavor,
    args: TokenStream,
    item: TokenStream,
) -> syn::Result<TokenStream> {
    let mut func = function(flavor, item)?;
    let args = Args::parse(flavor, args)?;
    let boxed = boxed_async(&func);
    let is_async = func.sig.asyncness.is_some() || boxed.is_some();
    let fence = match &args.fencing {
        Some(name) => Some(take_fencing_arg(&mut func.sig, &name.value)?),
        None => None,
    };
    if let Some(on_lost) = &args.on_lost
        && on_lost.value == OnLost::Cancel
        && !is_async
    {
        return Err(syn::Error::new(
            on_lost.name.span(),
            "`on_lost = \"cancel\"` needs an `async fn`: a running sync function cannot be stopped from outside; take the lock with `Lock::acquire` and check `guard.is_lost()` in the loop instead",
        ));
    }
    let cancel = args
        .on_lost
        .as_ref()
        .is_some_and(|o| o.value == OnLost::Cancel);
    if let Some(constness) = &func.sig.constness {
        return Err(syn::Error::new(
            constness.span,
            format!(
                "`{}` cannot go on a `const fn`: a lock is taken at run time; remove `const`",
                flavor.attr()
            ),
        ));
    }
    let krate = match &args.krate {
        Some(k) => k.value.clone(),
        None => parse_quote!(::lock_runtime),
    };
    let key = match &args.key {
        Some(lit) => {
            template::key_expr(lit, &func.sig, &krate, fence.as_ref().map(|(name, _)| name))?
        }
        None => default_key(&func.sig),
    };
    let raise = args.raises(flavor);
    if raise && !is_async {
        reject_future_return(flavor, &func.sig)?;
    }
    let lock = lock_expr(&args, flavor, &krate, key, &func.sig.ident);
    let plan = Plan {
        krate,
        lock,
        raise,
        fence,
        cancel,
    };
    Ok(wrap(func, &plan, boxed))
}

/// A sync function returning `impl Future` under `raise = true`: the lock
/// would cover making the future, and its error has nowhere to go but a
/// type error about a hidden `{async block}`; say what it is instead.
fn reject_future_return(flavor: Flavor, sig: &Signature) -> syn::Result<()> {
    let ReturnType::Type(_, ty) = &sig.output else {
        return Ok(());
    };
    let Type::ImplTrait(it) = &**ty else {
        return Ok(());
    };
    let is_future = it.bounds.iter().any(|b| {
        matches!(b, TypeParamBound::Trait(t)
            if t.path.segments.last().is_some_and(|s| s.ident == "Future"))
    });
    if !is_future {
        return Ok(());
    }
    let name = &sig.ident;
    Err(syn::Error::new_spanned(
        ty,
        format!(
            "`{name}` is a sync function that returns a future: `{attr}` would hold the lock while the future is created, not while it runs, and could not return the lock's error in its place; make it an `async fn` returning the future's output, like `async fn {name}(..) -> Result<T, E>`",
            attr = flavor.attr()
        ),
    ))
}

// Input:  fn f<'life0, 'async_trait>(&'life0 self, ..)
//             -> Pin<Box<dyn Future<Output = T> + Send + 'async_trait>>
//         { Box::pin(async move { body }) }
//         (what `#[async_trait]` on the impl or trait has made of an `async fn`)
// Output: Some((T, { body })): the function is locked as `async fn f(..) -> T { body }`
//
// The lock is taken inside the boxed future, around its body, as tracing's
// `#[instrument]` does for async-trait: locking around the outer function
// would only cover creating the future.
fn boxed_async(func: &ItemFn) -> Option<(Type, Block)> {
    if func.sig.asyncness.is_some() {
        return None;
    }
    let ReturnType::Type(_, ty) = &func.sig.output else {
        return None;
    };
    let output = future_output(&mut ty.as_ref().clone())?.clone();
    let [Stmt::Expr(Expr::Call(call), None)] = func.block.stmts.as_slice() else {
        return None;
    };
    let Expr::Path(path) = &*call.func else {
        return None;
    };
    let mut names = path.path.segments.iter().rev().map(|s| &s.ident);
    if !(names.next()? == "pin" && names.next()? == "Box") || call.args.len() != 1 {
        return None;
    }
    match call.args.first()? {
        Expr::Async(block) if block.capture.is_some() => Some((output, block.block.clone())),
        _ => None,
    }
}

/// `T` in `Pin<Box<dyn Future<Output = T> + ..>>`, found by the last
/// segment of each path, however the user or async-trait spelled them.
fn future_output(ty: &mut Type) -> Option<&mut Type> {
    let boxed = only_type_argument(ty, "Pin")?;
    let Type::TraitObject(object) = only_type_argument(boxed, "Box")? else {
        return None;
    };
    object.bounds.iter_mut().find_map(|bound| {
        let TypeParamBound::Trait(t) = bound else {
            return None;
        };
        let future = t.path.segments.last_mut().filter(|s| s.ident == "Future")?;
        let PathArguments::AngleBracketed(args) = &mut future.arguments else {
            return None;
        };
        args.args.iter_mut().find_map(|arg| match arg {
            GenericArgument::AssocType(a) if a.ident == "Output" => Some(&mut a.ty),
            _ => None,
        })
    })
}

/// `X` in `name<X>`.
fn only_type_argument<'a>(ty: &'a mut Type, name: &str) -> Option<&'a mut Type> {
    let Type::Path(p) = ty else {
        return None;
    };
    let last = p.path.segments.last_mut().filter(|s| s.ident == name)?;
    let PathArguments::AngleBracketed(args) = &mut last.arguments else {
        return None;
    };
    match args.args.first_mut()? {
        GenericArgument::Type(t) => Some(t),
        _ => None,
    }
}

/// What the generated body does, besides running the user's.
struct Plan {
    krate: Path,
    lock: TokenStream,
    raise: bool,
    /// `fencing = name`: the argument taken out of the signature, bound to
    /// the guard's fencing token instead.
    fence: Option<(Ident, Type)>,
    /// `on_lost = "cancel"`.
    cancel: bool,
}

// Input:  fn write(token: u64, data: &str) with `fencing = token`
// Output: fn write(data: &str), and Some((token, u64)) to bind in the body
fn take_fencing_arg(sig: &mut Signature, name: &Ident) -> syn::Result<(Ident, Type)> {
    let position = sig.inputs.iter().position(|arg| match arg {
        FnArg::Typed(t) => matches!(&*t.pat, syn::Pat::Ident(p) if p.ident == *name),
        FnArg::Receiver(_) => false,
    });
    let Some(position) = position else {
        return Err(syn::Error::new(
            name.span(),
            format!(
                "`fencing = {name}` names no argument of `{}`: add a parameter `{name}: u64`, which receives the lock's fencing token (callers do not pass it)",
                sig.ident
            ),
        ));
    };
    let inputs = std::mem::take(&mut sig.inputs);
    let mut taken = None;
    for (i, arg) in inputs.into_pairs().enumerate() {
        let arg = arg.into_value();
        if i == position {
            taken = Some(arg);
        } else {
            sig.inputs.push(arg);
        }
    }
    match taken {
        Some(FnArg::Typed(t)) => Ok((name.clone(), *t.ty)),
        _ => Err(syn::Error::new(
            name.span(),
            "the fencing argument must be a plain `name: u64` parameter",
        )),
    }
}

/// The function the attribute sits on, or an error naming what it sits on.
fn function(flavor: Flavor, item: TokenStream) -> syn::Result<ItemFn> {
    let attr = flavor.attr();
    if let Ok(func) = syn::parse2::<ItemFn>(item.clone()) {
        return Ok(func);
    }
    if let Ok(decl) = syn::parse2::<TraitItemFn>(item.clone())
        && let (None, Some(semi)) = (&decl.default, &decl.semi_token)
    {
        let name = &decl.sig.ident;
        // `fn f(..);` is a trait method's declaration or a foreign function;
        // only a receiver or `...` tells which.
        let message = if decl.sig.variadic.is_some() {
            foreign(attr, name)
        } else if decl.sig.receiver().is_some() {
            format!(
                "`{attr}` needs a function body to wrap, and `{name}` has none: put `{attr}` on the method where it is implemented, not on its declaration"
            )
        } else {
            format!(
                "`{attr}` needs a function body to wrap, and `{name}` has none: on a trait method's declaration, put `{attr}` on the method where it is implemented; on a foreign function (in an `extern` block), which has no body to lock, lock a Rust function that calls it instead"
            )
        };
        return Err(syn::Error::new(semi.span, message));
    }
    if let Ok(decl) = syn::parse2::<syn::ForeignItemFn>(item.clone()) {
        return Err(syn::Error::new(
            decl.sig.ident.span(),
            foreign(attr, &decl.sig.ident),
        ));
    }
    let (what, span) = match syn::parse2::<syn::Item>(item.clone()) {
        Ok(syn::Item::Struct(i)) => ("a struct", i.struct_token.span),
        Ok(syn::Item::Enum(i)) => ("an enum", i.enum_token.span),
        Ok(syn::Item::Union(i)) => ("a union", i.union_token.span),
        Ok(syn::Item::Impl(i)) => (
            "an `impl` block; put it on each method to lock instead",
            i.impl_token.span,
        ),
        Ok(syn::Item::Trait(i)) => ("a trait", i.trait_token.span),
        Ok(syn::Item::Mod(i)) => ("a module", i.mod_token.span),
        Ok(syn::Item::Const(i)) => ("a constant", i.const_token.span),
        Ok(syn::Item::Static(i)) => ("a static", i.static_token.span),
        Ok(syn::Item::Type(i)) => ("a type alias", i.type_token.span),
        Ok(syn::Item::Use(i)) => ("a `use` declaration", i.use_token.span),
        Ok(other) => ("this item", other.span()),
        // Not an item at all: the compiler will say what is wrong with it.
        Err(_) => {
            return Err(syn::Error::new(
                item.span(),
                format!("`{attr}` goes on a function"),
            ));
        }
    };
    Err(syn::Error::new(
        span,
        format!("`{attr}` goes on a function or method, not on {what}"),
    ))
}

fn foreign(attr: &str, name: &Ident) -> String {
    format!(
        "`{attr}` cannot go on `{name}`, a foreign function: it has no body to lock; lock a Rust function that calls it instead"
    )
}

// Input:  fn build_report(..)        /  fn save(&self, ..)
// Output: ::core::concat!(::core::module_path!(), "::", "build_report")
//         / ::std::format!("{}::{}", ::core::any::type_name::<Self>(), "save")
fn default_key(sig: &Signature) -> TokenStream {
    let name = sig.ident.unraw().to_string();
    let has_receiver = matches!(sig.inputs.first(), Some(FnArg::Receiver(_)));
    if has_receiver {
        // Two types' methods of the same name in one module must not share
        // a lock, so methods are named after their type.
        quote!(::std::format!("{}::{}", ::core::any::type_name::<Self>(), #name))
    } else {
        quote!(::core::concat!(::core::module_path!(), "::", #name))
    }
}

// Input:  fn build_report, key = format!(..), options wait = false, expire = "10s"
// Output: ::lock_runtime::__private::locked_function(
//             ::lock_runtime::__private::Lock::new(format!(..))
//                 .wait(false)
//                 .expire(::core::time::Duration::from_millis(10000u64)),
//             ::core::concat!(::core::module_path!(), "::", "build_report"),
//         )
fn lock_expr(
    args: &Args,
    flavor: Flavor,
    krate: &Path,
    key: TokenStream,
    name: &Ident,
) -> TokenStream {
    // Call-site spans: a literal spanned on the user's `0.04` would make
    // lints read that text as the source of our `40`.
    let millis = |ms: u64| {
        let n = LitInt::new(&ms.to_string(), Span::call_site());
        quote!(::core::time::Duration::from_millis(#n))
    };
    let mut calls = TokenStream::new();
    if let Some(alias) = &args.alias {
        let a = &alias.value;
        calls.extend(quote!(.alias(#a)));
    }
    // `#[once]` never waits unless asked to, so its default is spelled out;
    // `#[lock]` keeps the builder's default (wait).
    let explicit_wait = args.wait.as_ref().map(|w| w.value);
    let wait = match flavor {
        Flavor::Lock => explicit_wait,
        Flavor::Once => Some(args.waits(flavor)),
    };
    if let Some(wait) = wait {
        calls.extend(quote!(.wait(#wait)));
    }
    if let Some(w) = &args.wait_for_ms {
        let d = millis(w.value);
        calls.extend(quote!(.wait_for(#d)));
    }
    if let Some(s) = &args.steal_after_ms {
        let d = millis(s.value);
        calls.extend(quote!(.steal_after(#d)));
    }
    if let Some(e) = &args.expire_ms {
        let d = millis(e.value);
        calls.extend(quote!(.expire(#d)));
    }
    if let Some(d) = &args.delete_on_exit {
        let v = d.value;
        calls.extend(quote!(.delete_on_exit(#v)));
    }
    if let Some(f) = &args.fair {
        let v = f.value;
        calls.extend(quote!(.fair(#v)));
    }
    if let Some(l) = &args.label {
        let v = &l.value;
        calls.extend(quote!(.label(#v)));
    }
    let name = name.unraw().to_string();
    quote! {
        #krate::__private::locked_function(
            #krate::__private::Lock::new(#key) #calls,
            ::core::concat!(::core::module_path!(), "::", #name),
        )
    }
}

/// Names only the expansion can see: user code can neither read nor shadow
/// them, and they never collide with the user's own locals.
fn hidden(name: &str) -> Ident {
    Ident::new(name, Span::mixed_site())
}

// Input:  #[attrs] vis fn f(..) -> T { #![inner] body }
// Output: #[attrs] vis fn f(..) -> T (or Option<T>) { #![inner] take the guard; run the body }
//         (`boxed`: -> Pin<Box<dyn Future<Output = T (or Option<T>)> ..>>
//          { Box::pin(async move { take the guard; run the body }) })
fn wrap(func: ItemFn, plan: &Plan, boxed: Option<(Type, Block)>) -> TokenStream {
    let ItemFn {
        attrs,
        vis,
        mut sig,
        block,
    } = func;
    // Inner attributes (`#![allow(..)]`) arrive among `attrs`; they must go
    // back to the top of the body.
    let (outer, inner): (Vec<Attribute>, Vec<Attribute>) = attrs
        .into_iter()
        .partition(|a| matches!(a.style, syn::AttrStyle::Outer));
    let is_boxed = boxed.is_some();
    let (is_async, output, block) = match boxed {
        Some((ty, body)) => (
            true,
            ReturnType::Type(Default::default(), Box::new(ty)),
            body,
        ),
        None => (sig.asyncness.is_some(), sig.output.clone(), *block),
    };
    let mut body = match (is_async, plan.raise) {
        (false, true) => sync_raise(plan, &output, block),
        (false, false) => sync_skip(plan, &output, block),
        (true, true) => async_raise(plan, &output, block),
        (true, false) => async_skip(plan, &output, block),
    };
    if is_boxed {
        body = quote!(::std::boxed::Box::pin(async move { #body }));
    }
    if !plan.raise {
        match &mut sig.output {
            ReturnType::Type(_, ty) if is_boxed => {
                if let Some(out) = future_output(ty) {
                    let span = out.span();
                    *out = Type::Verbatim(quote_spanned!(span=> ::core::option::Option<#out>));
                }
            }
            _ => sig.output = optional(&sig.output),
        }
    }
    quote! {
        #(#outer)*
        #vis #sig {
            #(#inner)*
            #body
        }
    }
}

// Input:  fencing = token (token: u64)
// Output: let token: u64 = match fencing(&guard) { Ok(t) => t, Err(e) => return raise(e) };
//         (with `raise = false`: match fencing_or_skip(&guard) { Some(t) => t, None => return None })
fn fence_binding(plan: &Plan, output: &ReturnType, guard: &Ident) -> TokenStream {
    let Some((name, ty)) = &plan.fence else {
        return TokenStream::new();
    };
    let krate = &plan.krate;
    // Spanned on the declared type, so a wrong type is reported there.
    let span = ty.span();
    if plan.raise {
        let error = hidden("__lock_error");
        let raise = raise_call(krate, output, &error);
        let call = respan(quote!(#krate::__private::fencing), span);
        quote_spanned! {span=>
            let #name: #ty = match #call(&#guard) {
                ::core::result::Result::Ok(#name) => #name,
                ::core::result::Result::Err(#error) => #raise,
            };
        }
    } else {
        let call = respan(quote!(#krate::__private::fencing_or_skip), span);
        quote_spanned! {span=>
            #[allow(clippy::question_mark)]
            let #name: #ty = match #call(&#guard) {
                ::core::option::Option::Some(#name) => #name,
                ::core::option::Option::None => return ::core::option::Option::None,
            };
        }
    }
}

// Input:  -> T      /  (nothing)
// Output: -> ::core::option::Option<T>  /  -> ::core::option::Option<()>
fn optional(output: &ReturnType) -> ReturnType {
    match output {
        ReturnType::Default => parse_quote!(-> ::core::option::Option<()>),
        ReturnType::Type(arrow, ty) => {
            let span = ty.span();
            let ty = quote_spanned!(span=> ::core::option::Option<#ty>);
            ReturnType::Type(*arrow, Box::new(Type::Verbatim(ty)))
        }
    }
}

/// `return raise(error)`, spanned on the return type so that rustc's
/// "cannot carry a `LockError`" error points there.
fn raise_call(krate: &Path, output: &ReturnType, error: &Ident) -> TokenStream {
    let span = match output {
        ReturnType::Type(_, ty) => ty.span(),
        ReturnType::Default => Span::call_site(),
    };
    let raise = respan(quote!(#krate::__private::raise), span);
    // Still the hidden local, but located at the return type like the rest
    // of the call, so that the call's span is the return type's.
    let error = Ident::new(&error.to_string(), error.span().located_at(span));
    quote_spanned!(span=> return #raise(#error))
}

/// Every token of `tokens` located at `span`. A path mixing spans would be
/// reported from the attribute all the way to the user's token.
pub(crate) fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut t| {
            t.set_span(t.span().located_at(span));
            t
        })
        .collect()
}

// Input:  fn f(..) -> Result<T, E> { body }
// Output: fn f(..) -> Result<T, E> {
//             let lock = Lock::new(key)..;
//             let guard = match acquire(lock) { Ok(g) => g, Err(e) => return raise(e) };
//             let entered = enter(&guard); // the body runs inside `lock.held`
//             body
//         }
fn sync_raise(plan: &Plan, output: &ReturnType, block: Block) -> TokenStream {
    let Plan { krate, lock, .. } = plan;
    let (guard, error) = (hidden("__lock_guard"), hidden("__lock_error"));
    let raise = raise_call(krate, output, &error);
    let fence = fence_binding(plan, output, &guard);
    let stmts = block.stmts;
    let bound = hidden("__lock");
    let entered = hidden("__lock_entered");
    quote! {
        let #bound = #lock;
        let #guard = match #krate::__private::acquire(#bound) {
            ::core::result::Result::Ok(#guard) => #guard,
            ::core::result::Result::Err(#error) => #raise,
        };
        #fence
        let #entered = #krate::__private::enter(&#guard);
        #(#stmts)*
    }
}

// Input:  fn f(..) -> T { body }
// Output: fn f(..) -> Option<T> {
//             let lock = Lock::new(key)..;
//             let guard = match acquire_or_skip(lock) { Some(g) => g, None => return None };
//             let entered = enter(&guard);
//             Some((move || -> T { body })())
//         }
fn sync_skip(plan: &Plan, output: &ReturnType, block: Block) -> TokenStream {
    let Plan { krate, lock, .. } = plan;
    let guard = hidden("__lock_guard");
    let fence = fence_binding(plan, output, &guard);
    // A closure, not an inner fn, so `self`, generics and `impl Trait`
    // arguments stay in scope; it turns the body's `return x` into `Some(x)`.
    let annotation = match output {
        ReturnType::Type(_, ty) if closure_can_name(ty) => output.to_token_stream(),
        _ => TokenStream::new(),
    };
    let bound = hidden("__lock");
    let entered = hidden("__lock_entered");
    quote! {
        let #bound = #lock;
        let #guard = match #krate::__private::acquire_or_skip(#bound) {
            ::core::option::Option::Some(#guard) => #guard,
            ::core::option::Option::None => return ::core::option::Option::None,
        };
        #fence
        let #entered = #krate::__private::enter(&#guard);
        ::core::option::Option::Some((move || #annotation #block)())
    }
}

// Input:  async fn f(..) -> Result<T, E> { body }
// Output: async fn f(..) -> Result<T, E> {
//             let lock = Lock::new(key)..;
//             let guard = match acquire_async(lock).await { Ok(g) => g, Err(e) => return raise(e) };
//             let out = async move { body }.await;
//             exit_async(guard).await;
//             out
//         }
fn async_raise(plan: &Plan, output: &ReturnType, block: Block) -> TokenStream {
    let Plan { krate, lock, .. } = plan;
    let (guard, error, out) = (
        hidden("__lock_guard"),
        hidden("__lock_error"),
        hidden("__lock_out"),
    );
    let raise = raise_call(krate, output, &error);
    let fence = fence_binding(plan, output, &guard);
    let body = async_body(plan, output, block, &guard, quote!(#raise));
    let bound = hidden("__lock");
    quote! {
        // A statement of its own, so that the temporaries of the key's
        // rendering (`&dyn Display`) end here, not across the `.await`.
        let #bound = #lock;
        let #guard = match #krate::__private::acquire_async(#bound).await {
            ::core::result::Result::Ok(#guard) => #guard,
            ::core::result::Result::Err(#error) => #raise,
        };
        #fence
        let #out = #body;
        #krate::__private::exit_async(#guard).await;
        #out
    }
}

// Input:  async fn f(..) -> T { body }
// Output: async fn f(..) -> Option<T> {
//             let lock = Lock::new(key)..;
//             let guard = match acquire_or_skip_async(lock).await { Some(g) => g, None => return None };
//             let out = async move { body }.await;
//             exit_async(guard).await;
//             Some(out)
//         }
fn async_skip(plan: &Plan, output: &ReturnType, block: Block) -> TokenStream {
    let Plan { krate, lock, .. } = plan;
    let (guard, out) = (hidden("__lock_guard"), hidden("__lock_out"));
    let fence = fence_binding(plan, output, &guard);
    let body = async_body(
        plan,
        output,
        block,
        &guard,
        quote!(return ::core::option::Option::None),
    );
    let bound = hidden("__lock");
    quote! {
        let #bound = #lock;
        let #guard = match #krate::__private::acquire_or_skip_async(#bound).await {
            ::core::option::Option::Some(#guard) => #guard,
            ::core::option::Option::None => return ::core::option::Option::None,
        };
        #fence
        let #out = #body;
        #krate::__private::exit_async(#guard).await;
        ::core::option::Option::Some(#out)
    }
}

// Input:  { body } of an async fn returning T
// Output: in_held(&guard, async move { if false { return <value of type T>; } { body } }).await
//         with `on_lost = "cancel"`:
//         match run_until_lost(&guard, async move { .. }).await {
//             Ok(out) => out,
//             Err(error) => { dispose_lost(guard).await; <on_lost> }
//         }
//
// The body becomes an async block so that its `return` and `?` end the block,
// not the function, which still has the lock to give back. The dead typed
// `return` (tracing-attributes' trick) makes the block's type the declared
// return type, so `?` and `.into()` infer as they did in the function.
fn async_body(
    plan: &Plan,
    output: &ReturnType,
    block: Block,
    guard: &Ident,
    on_lost: TokenStream,
) -> TokenStream {
    let fake = match output {
        ReturnType::Type(_, ty) if !mentions_impl(ty) => {
            let value = hidden("__lock_return");
            quote_spanned! {ty.span()=>
                #[allow(
                    unknown_lints,
                    unreachable_code,
                    clippy::diverging_sub_expression,
                    clippy::empty_loop,
                    clippy::let_unit_value,
                    clippy::let_with_type_underscore,
                    clippy::needless_return,
                    clippy::unreachable
                )]
                if false {
                    let #value: #ty = loop {};
                    return #value;
                }
            }
        }
        _ => TokenStream::new(),
    };
    let krate = &plan.krate;
    // The body's events nest under the guard's `lock.held` span.
    let body = quote!(#krate::__private::in_held(&#guard, async move { #fake #block }));
    if !plan.cancel {
        return quote!(#body.await);
    }
    let (done, error) = (hidden("__lock_done"), hidden("__lock_error"));
    quote! {
        match #krate::__private::run_until_lost(&#guard, #body).await {
            ::core::result::Result::Ok(#done) => #done,
            ::core::result::Result::Err(#error) => {
                #krate::__private::dispose_lost(#guard).await;
                #on_lost
            }
        }
    }
}

/// Whether a closure's `-> T` can repeat the function's return type: not with
/// `impl Trait` (not allowed there) or elided lifetimes (a closure would
/// invent fresh ones, which fail to match the arguments').
fn closure_can_name(ty: &Type) -> bool {
    struct Finder(bool);
    impl<'ast> Visit<'ast> for Finder {
        fn visit_type_impl_trait(&mut self, _: &'ast syn::TypeImplTrait) {
            self.0 = true;
        }
        fn visit_lifetime(&mut self, l: &'ast syn::Lifetime) {
            self.0 |= l.ident == "_";
        }
        fn visit_type_reference(&mut self, r: &'ast syn::TypeReference) {
            self.0 |= r.lifetime.is_none();
            syn::visit::visit_type_reference(self, r);
        }
    }
    let mut f = Finder(false);
    f.visit_type(ty);
    !f.0
}

fn mentions_impl(ty: &Type) -> bool {
    struct Finder(bool);
    impl<'ast> Visit<'ast> for Finder {
        fn visit_type_impl_trait(&mut self, _: &'ast syn::TypeImplTrait) {
            self.0 = true;
        }
    }
    let mut f = Finder(false);
    f.visit_type(ty);
    f.0
}
