//! The `LogStoreTestSuite` (being written).
