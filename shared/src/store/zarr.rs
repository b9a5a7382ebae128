//! Adapter from a [`BlobStore`](super::BlobStore) to zarrs' async storage traits.
