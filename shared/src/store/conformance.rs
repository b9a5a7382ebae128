//! The conformance suite every [`BlobStore`](super::BlobStore) passes.
