//! placeholder manual
mod args;
mod expand;
mod template;

use proc_macro::TokenStream;

use crate::args::Flavor;

#[proc_macro_attribute]
pub fn lock(args: TokenStream, item: TokenStream) -> TokenStream {
    run(Flavor::Lock, args, item)
}

#[proc_macro_attribute]
pub fn once(args: TokenStream, item: TokenStream) -> TokenStream {
    run(Flavor::Once, args, item)
}

/// On error the item goes out unchanged next to the `compile_error!`, so
/// there is one error, and the function still exists for the IDE and callers.
fn run(flavor: Flavor, args: TokenStream, item: TokenStream) -> TokenStream {
    let item = proc_macro2::TokenStream::from(item);
    match expand::expand(flavor, args.into(), item.clone()) {
        Ok(out) => out.into(),
        Err(e) => {
            let mut out = e.to_compile_error();
            out.extend(item);
            out.into()
        }
    }
}
