//! What a simulator check reports when an invariant breaks.

/// A broken invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Which check.
    pub check: &'static str,
    /// What was seen.
    pub detail: String,
}
