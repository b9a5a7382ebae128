//! The output's layout: rows and nonzeros per chunk, and how consolidation shards split
//! the chunks. Pure: the reducer lays the output out by it, and the simulation models
//! the same shards.

use std::ops::Range;

/// Rows per chunk of the output's row arrays (`X/indptr`, obs).
pub const OUT_ROWS_PER_CHUNK: u64 = 1 << 14;
/// Most values per chunk of the output's `X/indices` and `X/data`.
pub const OUT_NNZ_PER_CHUNK: u64 = 1 << 20;

/// Shards a consolidation has at least, when the output has that many nonzero chunks:
/// a result of a few `shard_nnz` would otherwise be one or two shards each copying
/// tens of MB one after another, while the shards all run at once.
pub const MIN_SHARDS: u64 = 16;

/// Part reads a consolidation shard has in flight per array: a shard reads a piece of
/// every part it overlaps, each a read latency-bound on S3. Its arrays are read at
/// once: 7 of them stay within the store's bound on requests
/// (`store::s3::DEFAULT_MAX_IN_FLIGHT`).
pub const PART_READS_IN_FLIGHT: usize = 32;

/// The output's nonzeros per chunk and the consolidation's shard count, for `nz`
/// nonzeros and `shard_nnz` (`Config::shard_nnz`) nonzeros per shard, but at least
/// [`MIN_SHARDS`] (never more than a chunk each). The chunk depends on `shard_nnz` only
/// below `OUT_NNZ_PER_CHUNK`, so the output's bytes do not depend on how many shards
/// write them.
pub fn shard_layout(nz: u64, shard_nnz: u64) -> (u64, u32) {
    let shard_nnz = shard_nnz.max(1);
    let nnz_per_chunk = OUT_NNZ_PER_CHUNK.min(shard_nnz).min(nz).max(1);
    let nnz_chunks = nz.div_ceil(nnz_per_chunk).max(1);
    let shards = nz.div_ceil(shard_nnz).max(MIN_SHARDS).clamp(1, nnz_chunks);
    (nnz_per_chunk, shards as u32)
}

/// The chunks of an array of `n_chunks` that shard `shard` of `shards` writes.
pub fn shard_chunks(n_chunks: u64, shard: u32, shards: u32) -> Range<u64> {
    let s = u64::from(shards.max(1));
    let i = u64::from(shard);
    (n_chunks * i / s)..(n_chunks * (i + 1) / s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shards_write_every_chunk_once() {
        for (n_chunks, shards) in [(0, 1), (1, 1), (5, 16), (16, 16), (17, 16), (1000, 7)] {
            let mut next = 0;
            for shard in 0..shards {
                let chunks = shard_chunks(n_chunks, shard, shards);
                assert_eq!(chunks.start, next, "{n_chunks} chunks, shard {shard}");
                next = chunks.end;
            }
            assert_eq!(next, n_chunks, "{n_chunks} chunks in {shards} shards");
        }
    }

    #[test]
    fn at_least_min_shards_but_never_more_than_a_chunk_each() {
        // Few nonzeros: one chunk, so one shard.
        assert_eq!(shard_layout(10, 1 << 24), (10, 1));
        // Nothing at all still has a chunk and a shard.
        assert_eq!(shard_layout(0, 1 << 24), (1, 1));
        // A few `shard_nnz`: `MIN_SHARDS`, each at least a chunk.
        let nz = 3 * (1 << 24);
        assert_eq!(
            shard_layout(nz, 1 << 24),
            (OUT_NNZ_PER_CHUNK, MIN_SHARDS as u32)
        );
        // Many: one per `shard_nnz`.
        assert_eq!(shard_layout(40 << 24, 1 << 24), (OUT_NNZ_PER_CHUNK, 40));
    }

    #[test]
    fn the_chunk_does_not_depend_on_the_shard_count() {
        let nz = 100 << 20;
        let (chunk, _) = shard_layout(nz, 1 << 24);
        for shard_nnz in [OUT_NNZ_PER_CHUNK, 1 << 22, 1 << 26, 1 << 30] {
            assert_eq!(shard_layout(nz, shard_nnz).0, chunk, "{shard_nnz}");
        }
    }
}
