//! The model's hash maps and sets: std's, with the Fx hash instead of SipHash. Their keys
//! are the model's own (pointers, handles, ids), never an attacker's, so SipHash's
//! resistance to chosen keys buys nothing here, and its cost was the largest single item
//! of a filtered I/O in the benchmarks (the model's FltMgr looks up file objects, contexts
//! and operations in several maps per operation, which real FltMgr does with pointers).

/// A hash map keyed by the model's own values.
pub type HashMap<K, V> = std::collections::HashMap<K, V, rustc_hash::FxBuildHasher>;

/// A hash set of the model's own values.
pub type HashSet<K> = std::collections::HashSet<K, rustc_hash::FxBuildHasher>;
