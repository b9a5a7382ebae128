//! The output formats a request may ask for, and what `GET /v1/formats` says of them.

use serde_json::{Value, json};

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// The consolidated AnnData Zarr itself.
    Zarr,
    /// AnnData HDF5.
    H5ad,
    /// Loom (HDF5, dense genes × cells).
    Loom,
    /// A 10x-style matrix directory in a tarball.
    Mtx,
    /// Dense CSV, gzipped.
    Csv,
}

/// One format's description.
#[derive(Debug, Clone, Copy)]
pub struct FormatInfo {
    /// The format.
    pub format: Format,
    /// Its name in requests.
    pub name: &'static str,
    /// What it is and how to open it.
    pub description: &'static str,
    /// The files of a result, under `results/{id}/`.
    pub files: &'static [&'static str],
    /// The media type of the main file.
    pub media_type: &'static str,
    /// Whether the format stores every value, zeros included (so its size is bounded
    /// before a request starts).
    pub dense: bool,
}

/// Every format, in the order `GET /v1/formats` lists them.
pub const FORMATS: &[FormatInfo] = &[
    FormatInfo {
        format: Format::Zarr,
        name: "zarr",
        description: "AnnData Zarr v3 group: X as CSR, obs with the requested fields, var with \
                      gene ids and names. Open with anndata.read_zarr.",
        files: &["matrix.zarr/"],
        media_type: "application/vnd+zarr",
        dense: false,
    },
    FormatInfo {
        format: Format::H5ad,
        name: "h5ad",
        description: "AnnData HDF5 file: X as a sparse CSR matrix, obs with the requested fields, \
                      var with gene ids and names. Open with anndata.read_h5ad or scanpy.read_h5ad.",
        files: &["matrix.h5ad"],
        media_type: "application/x-hdf5",
        dense: false,
    },
    FormatInfo {
        format: Format::Loom,
        name: "loom",
        description: "Loom 3.0 file: a dense genes x cells matrix, row attributes Accession (gene \
                      id) and Gene (name), column attributes CellID and the requested fields. \
                      Open with loompy.connect or scanpy.read_loom. Limited in size (dense).",
        files: &["matrix.loom"],
        media_type: "application/x-hdf5",
        dense: true,
    },
    FormatInfo {
        format: Format::Mtx,
        name: "mtx",
        description: "10x Genomics matrix directory as Cell Ranger writes it, in a .tar.gz: \
                      filtered_feature_bc_matrix/ with matrix.mtx.gz (genes x cells), \
                      features.tsv.gz, barcodes.tsv.gz, and obs.tsv.gz with the requested fields. \
                      Open with scanpy.read_10x_mtx or Seurat's Read10X.",
        files: &["filtered_feature_bc_matrix.tar.gz"],
        media_type: "application/gzip",
        dense: false,
    },
    FormatInfo {
        format: Format::Csv,
        name: "csv",
        description: "Dense cells x genes table with a header of gene ids, gzipped \
                      (matrix.csv.gz), with obs.csv.gz (the requested fields) and var.csv.gz \
                      (gene ids and names). Open with pandas.read_csv(..., index_col=0). \
                      Limited in size (dense).",
        files: &["matrix.csv.gz", "obs.csv.gz", "var.csv.gz"],
        media_type: "text/csv",
        dense: true,
    },
];

impl Format {
    /// The format called `name`.
    pub fn parse(name: &str) -> Option<Format> {
        FORMATS.iter().find(|f| f.name == name).map(|f| f.format)
    }

    /// Its description.
    pub fn info(self) -> &'static FormatInfo {
        FORMATS
            .iter()
            .find(|f| f.format == self)
            .expect("every format is described")
    }

    /// Its name in requests.
    pub fn name(self) -> &'static str {
        self.info().name
    }

    /// The names of every format.
    pub fn names() -> Vec<&'static str> {
        FORMATS.iter().map(|f| f.name).collect()
    }
}

/// The body of `GET /v1/formats`.
pub fn formats_document() -> Value {
    let formats: Vec<Value> = FORMATS
        .iter()
        .map(|f| {
            json!({
                "name": f.name,
                "description": f.description,
                "media_type": f.media_type,
                "files": f.files,
                "dense": f.dense,
            })
        })
        .collect();
    json!({ "formats": formats })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for f in FORMATS {
            assert_eq!(Format::parse(f.name), Some(f.format));
            assert_eq!(f.format.name(), f.name);
        }
        assert_eq!(Format::parse("xlsx"), None);
        assert_eq!(Format::names(), ["zarr", "h5ad", "loom", "mtx", "csv"]);
    }
}
