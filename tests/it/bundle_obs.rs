//! A bundle's cell fields, as anndata sees them: a bundle with a field of every kind is
//! written to a filesystem store, and `anndata.read_zarr` of its group must give each
//! as the pandas column the test expects (categorical, Int64, boolean, float with NaN).

use std::sync::Arc;

use cellmatrix::bundle::{
    Csr, Features, Layout, SourceInfo, SourceMatrix, Values, write_bundle, write_feature_set,
};
use cellmatrix::field::column::Column;
use cellmatrix::fqid::Fqid;
use cellmatrix::store::DynStore;
use cellmatrix::store::fs::FsStore;
use cellmatrix_tests::run_python;
use serde_json::{Value, json};

/// Cells of the bundle: three chunks of 16 rows, the last one padded.
const CELLS: usize = 40;

/// One field: its column as stored and, independently, the values the reader must see.
struct Field {
    name: &'static str,
    column: Column,
    expected: Value,
}

fn fields() -> Vec<Field> {
    let kinds = ["B cell", "naïve T \"helper\"", "NK cell"];
    let cell_type: Vec<Option<&str>> = (0..CELLS)
        .map(|i| (i % 7 != 3).then(|| kinds[i % 3]))
        .collect();
    // Categories in a given order, one used by no cell: a source's categorical as is.
    let categories = vec![
        "NK cell".to_string(),
        "B cell".into(),
        "unused".into(),
        "naïve T \"helper\"".into(),
    ];
    let codes = cell_type
        .iter()
        .map(|v| {
            v.map_or(-1, |s| {
                categories.iter().position(|c| c == s).unwrap() as i32
            })
        })
        .collect();
    let phase: Vec<Option<&str>> = (0..CELLS).map(|i| Some(["G1", "S"][i % 2])).collect();
    let count: Vec<Option<i64>> = (0..CELLS).map(|i| Some(i as i64 * 1_000_003 - 7)).collect();
    let maybe: Vec<Option<i64>> = (0..CELLS)
        .map(|i| (i % 5 != 0).then_some(-(i as i64)))
        .collect();
    let score: Vec<Option<f64>> = (0..CELLS)
        .map(|i| (i % 11 != 0).then_some(i as f64 / 3.0 - 2.5))
        .collect();
    let doublet: Vec<Option<bool>> = (0..CELLS).map(|i| Some(i % 4 == 0)).collect();
    let passed: Vec<Option<bool>> = (0..CELLS)
        .map(|i| (i % 6 != 1).then_some(i % 2 == 0))
        .collect();
    let nothing: Vec<Option<&str>> = vec![None; CELLS];
    vec![
        Field {
            name: "cell_type",
            expected: json!({"type": "string", "values": cell_type, "categories": categories}),
            column: Column::Categorical { categories, codes },
        },
        Field {
            name: "phase",
            column: Column::from_strings(&phase),
            expected: json!({"type": "string", "values": phase}),
        },
        Field {
            name: "count",
            column: Column::ints(&count),
            expected: json!({"type": "integer", "values": count}),
        },
        Field {
            name: "maybe_count",
            column: Column::ints(&maybe),
            expected: json!({"type": "integer", "values": maybe}),
        },
        Field {
            name: "score",
            column: Column::Num(score.iter().map(|v| v.unwrap_or(f64::NAN)).collect()),
            expected: json!({"type": "number", "values": score}),
        },
        Field {
            name: "is_doublet",
            column: Column::bools(&doublet),
            expected: json!({"type": "boolean", "values": doublet}),
        },
        Field {
            name: "passed",
            column: Column::bools(&passed),
            expected: json!({"type": "boolean", "values": passed}),
        },
        Field {
            name: "nothing",
            column: Column::from_strings(&nothing),
            expected: json!({"type": "string", "values": nothing, "categories": []}),
        },
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn anndata_reads_every_cell_field_as_pandas_would_hold_it() {
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore = Arc::new(FsStore::open(dir.path()).unwrap());
    let fields = fields();
    let cells: Vec<String> = (0..CELLS).map(|i| format!("cell-{i}")).collect();
    let dense: Vec<u32> = (0..CELLS * 5).map(|i| (i % 3) as u32).collect();
    let src = SourceMatrix {
        cells: cells.clone(),
        features: Features {
            ids: (0..5).map(|i| format!("g{i}")).collect(),
            names: (0..5).map(|i| format!("G{i}")).collect(),
        },
        matrix: Csr::from_dense_rows(CELLS, 5, &Values::U32(dense)),
        obs: fields
            .iter()
            .map(|f| (f.name.to_string(), f.column.clone()))
            .collect(),
    };
    src.validate("test").unwrap();
    let fqid =
        Fqid::parse("0a1b2c3d-0000-4000-8000-000000000000.2019-02-02T065454.662896Z").unwrap();
    let feature_set = write_feature_set(&store, &src.features).await.unwrap();
    write_bundle(
        &store,
        &fqid,
        &src,
        &feature_set,
        &Default::default(),
        SourceInfo {
            file: "t".into(),
            format: "t".into(),
        },
        Layout {
            rows_per_chunk: 16,
            nnz_per_chunk: 64,
        },
    )
    .await
    .unwrap();

    let columns: Vec<Value> = fields
        .iter()
        .map(|f| {
            let mut c = f.expected.clone();
            c["name"] = json!(f.name);
            c
        })
        .collect();
    let zarr = dir.path().join(format!("bundles/{fqid}/matrix.zarr"));
    let spec = json!({ "zarr": zarr, "cells": cells, "columns": columns });
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_vec(&spec).unwrap()).unwrap();
    let out = run_python("check_obs.py", &[file.path().as_os_str()]);
    assert_eq!(
        out.lines().filter(|l| l.starts_with("ok ")).count(),
        fields.len(),
        "{out}"
    );
}
