//! How much memory an input may make the readers allocate
//! ([0052](../../../docs/decisions/0052-ingest-allocations-are-bounded-by-the-file.md)).
//!
//! Every allocation sized from a number in the input (a header's nonzero count, an HDF5
//! dataset's shape, a line's length) is checked before it is made against what the file
//! could hold and against an absolute cap, in the bytes it takes once decoded and
//! widened (a u8 dataset read as u64 counts 8 bytes an element). A failed allocation
//! aborts the process, which no `catch_unwind` turns back into an error.

use crate::error::Error;

/// The most bytes one array decoded from an input may take in memory, after widening:
/// 16 GiB, e.g. two billion 64-bit indices, about the nonzeros of a 700,000-cell 10x
/// matrix; larger inputs are split before ingest.
pub const MAX_ARRAY_BYTES: u64 = 16 << 30;

/// Deflate cannot expand data by more than about 1032:1, so no HDF5 dataset stored in a
/// file of N bytes legitimately decodes to more than this many times N.
pub const MAX_H5_EXPANSION: u64 = 1100;

/// The most a gzipped text input may inflate per compressed byte. Deflate's own limit
/// is about 1032; a gzipped count table reaches 50 at 97% zeros and 980 when it is
/// nothing but zeros, so only a table over about 99.8% zeros (better given as mtx) or a
/// bomb passes this.
pub const MAX_GZIP_RATIO: u64 = 512;

/// The most bytes a gzipped text input may inflate to, whatever its size.
pub const MAX_INFLATED_BYTES: u64 = 64 << 30;

/// The longest line a text input may have: a table header of a million cells with
/// 100-character labels fits.
pub const MAX_LINE_BYTES: usize = 256 << 20;

/// Bytes a `String` costs beyond its text (pointer, length, capacity).
pub const STRING_OVERHEAD: u64 = 24;

/// Refuses an array of `count` elements of `element_bytes` each when it would pass
/// `limit` bytes (what the file can hold, or [`MAX_ARRAY_BYTES`] if less).
pub fn check_array(
    what: &str,
    array: &str,
    count: u64,
    element_bytes: u64,
    limit: u64,
) -> Result<(), Error> {
    let bytes = count.saturating_mul(element_bytes);
    let limit = limit.min(MAX_ARRAY_BYTES);
    if bytes > limit {
        return Err(Error::input(
            what,
            format!(
                "{array}: {count} elements ({bytes} bytes in memory) are more than this file \
                 can hold (at most {limit} bytes)"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    //! Crafted inputs that claim more than they hold, for every reader.

    use std::io::Write;
    use std::path::Path;

    use super::*;
    use crate::ingest::tenx_h5::tests::fixture;
    use crate::ingest::{IngestOptions, read_input};

    /// The one-line input error reading `path` gives.
    fn refusal(path: &Path) -> String {
        match read_input(path, &IngestOptions::default()) {
            Err(e @ Error::Input { .. }) => {
                let msg = e.to_string();
                assert!(!msg.contains('\n'), "one line expected: {msg}");
                msg
            }
            Err(e) => panic!("{}: expected an input error, got {e:?}", path.display()),
            Ok(_) => panic!("{}: read without error", path.display()),
        }
    }

    pub(crate) fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(bytes).unwrap();
        gz.finish().unwrap()
    }

    /// A 10x matrix directory with 4 barcodes and 5 features around `matrix`.
    pub(crate) fn mtx_dir(dir: &Path, name: &str, matrix: &[u8]) -> std::path::PathBuf {
        let d = dir.join("mtx");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("barcodes.tsv"), "A-1\nB-1\nC-1\nD-1\n").unwrap();
        std::fs::write(
            d.join("features.tsv"),
            "G1\tg1\nG2\tg2\nG3\tg3\nG4\tg4\nG5\tg5\n",
        )
        .unwrap();
        std::fs::write(d.join(name), matrix).unwrap();
        d
    }

    /// A gzip stream of about 1 KB that inflates to 1 MiB: a header, then zeros.
    pub(crate) fn bomb(header: &[u8]) -> Vec<u8> {
        let mut plain = header.to_vec();
        plain.resize(1 << 20, b'0');
        let gz = gzip(&plain);
        assert!(gz.len() <= 1100, "the bomb is {} bytes", gz.len());
        gz
    }

    #[test]
    fn an_mtx_header_claiming_10_to_the_15_nonzeros() {
        let tmp = tempfile::tempdir().unwrap();
        let text =
            b"%%MatrixMarket matrix coordinate integer general\n5 4 1000000000000000\n1 1 1\n";
        for (name, bytes) in [("matrix.mtx", text.to_vec()), ("matrix.mtx.gz", gzip(text))] {
            let dir = tmp.path().join(name);
            let d = mtx_dir(&dir, name, &bytes);
            let msg = refusal(&d);
            assert!(msg.contains(name), "{msg}");
            assert!(
                msg.contains("declares 1000000000000000 entries, but this file can hold at most"),
                "{msg}"
            );
        }
    }

    #[test]
    fn a_one_kilobyte_gzip_that_inflates_past_the_cap() {
        let tmp = tempfile::tempdir().unwrap();
        let table = tmp.path().join("counts.tsv.gz");
        std::fs::write(&table, bomb(b"gene\tc1\ng1\t")).unwrap();
        let msg = refusal(&table);
        assert!(
            msg.contains("counts.tsv.gz") && msg.contains("inflates past"),
            "{msg}"
        );

        let d = mtx_dir(
            tmp.path(),
            "matrix.mtx.gz",
            &bomb(b"%%MatrixMarket matrix coordinate integer general\n%"),
        );
        let msg = refusal(&d);
        assert!(
            msg.contains("matrix.mtx.gz") && msg.contains("gzip bomb"),
            "{msg}"
        );
    }

    #[test]
    fn hdf5_datasets_declaring_huge_shapes() {
        for (name, dataset) in [
            ("huge_shape.h5", "/matrix/data"),
            ("huge_shape.h5ad", "/X/indices"),
        ] {
            let (_d, path) = fixture(name);
            let msg = refusal(&path);
            assert!(
                msg.contains(name)
                    && msg.contains(&format!("{dataset} declares shape [1000000000000]")),
                "{msg}"
            );
        }
    }

    #[test]
    fn widened_elements_count_against_the_bound() {
        let (_d, path) = crate::ingest::tenx_h5::tests::built(|b| {
            b.create_dataset("small").with_data(&vec![1u8; 1000]);
        });
        let file = hdf5_pure::File::open(&path).unwrap();
        let ds = file.dataset("small").unwrap();
        // A file of 1 byte "holds" 1100 bytes: the 1000 stored, but not the 8000 they take
        // read as u64.
        let src = crate::ingest::tenx_h5::H5Input::new("t".into(), 1);
        let msg = crate::ingest::tenx_h5::read_index_array(&ds, "/small", &src)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("8000 bytes in memory"), "{msg}");
        let len = std::fs::metadata(&path).unwrap().len();
        let src = crate::ingest::tenx_h5::H5Input::new("t".into(), len);
        assert_eq!(
            crate::ingest::tenx_h5::read_index_array(&ds, "/small", &src).unwrap(),
            vec![1; 1000]
        );
    }

    #[test]
    fn a_100_byte_file_of_each_format() {
        let tmp = tempfile::tempdir().unwrap();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut random = || -> Vec<u8> {
            (0..100)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect()
        };
        let (_d, h5) = fixture("tenx_v3.h5");
        let (_d2, h5ad) = fixture("csr.h5ad");
        let h5 = std::fs::read(h5).unwrap();
        let h5ad = std::fs::read(h5ad).unwrap();
        let mtx = b"%%MatrixMarket matrix coordinate integer general\n5 4 3\n1 1 1\n2 2 2\n3 3 3\n4 4 4\n5 4 5\n".to_vec();
        let csv = b"gene,c1,c2\ng1,1,2\ng2,x,4\n".to_vec();
        let prefixes: [(&str, Vec<u8>); 4] = [
            ("matrix.mtx", mtx[..mtx.len().min(100)].to_vec()),
            ("x.h5", h5[..100].to_vec()),
            ("x.h5ad", h5ad[..100].to_vec()),
            ("x.csv", csv),
        ];
        for (i, (name, prefix)) in prefixes.into_iter().enumerate() {
            for (kind, bytes) in [
                ("prefix", prefix),
                ("random", random()),
                ("gzip", gzip(&random())),
            ] {
                let dir = tmp.path().join(format!("{i}{kind}"));
                std::fs::create_dir_all(&dir).unwrap();
                let path = if name == "matrix.mtx" {
                    mtx_dir(&dir, name, &bytes)
                } else {
                    let p = dir.join(name);
                    std::fs::write(&p, &bytes).unwrap();
                    p
                };
                let msg = refusal(&path);
                assert!(msg.contains(&*dir.display().to_string()), "{msg}");
            }
        }
    }
}
