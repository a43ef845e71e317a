//! placeholder
use proc_macro::TokenStream;
/// placeholder
#[proc_macro_attribute]
pub fn lock(_a: TokenStream, i: TokenStream) -> TokenStream {
    i
}
/// placeholder
#[proc_macro_attribute]
pub fn once(_a: TokenStream, i: TokenStream) -> TokenStream {
    i
}
