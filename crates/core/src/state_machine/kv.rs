//! PLACEHOLDER being replaced by the KvStateMachine implementation.
#![allow(missing_docs)]
use bytes::Bytes;
pub enum KvCommand { Put { key: Bytes, value: Bytes } }
pub enum KvQuery { Get { key: Bytes } }
pub enum KvResponse { Value(Option<Bytes>) }
pub struct KvStateMachine;
