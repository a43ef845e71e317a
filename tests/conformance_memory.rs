//! The conformance suite (`lock_runtime::testing`) for the embedded memory
//! store: `cargo test conformance_memory` runs each behaviour as a test.

use lock_runtime::registry::AliasConfig;

lock_runtime::conformance_tests!(conformance_memory, || AliasConfig::memory_named(
    "conformance"
));
