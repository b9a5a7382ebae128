//! Cells chosen by their annotations: bundles with cell fields of every kind (a
//! categorical with nulls, a nullable integer some bundles lack, floats with NaN, a
//! nullable boolean) and typed bundle fields, queried through `where` and through the
//! same `filter`, in every format. `check_fields.py` selects the cells with pandas from
//! the test's own description of the sources, never through our parser, and compares
//! the cell ids, every obs column and each cell's counts with the output as anndata,
//! loompy and pandas read it.

use std::sync::Arc;

use cellmatrix::app::App;
use cellmatrix::bundle::{
    Csr, Features, Layout, SourceInfo, SourceMatrix, Values, write_bundle, write_feature_set,
};
use cellmatrix::catalog;
use cellmatrix::config::Config;
use cellmatrix::field::Scalar;
use cellmatrix::field::column::Column;
use cellmatrix::fqid::Fqid;
use cellmatrix::store::DynStore;
use cellmatrix::store::fs::FsStore;
use cellmatrix_tests::{download, result_prefix, run_python, run_request};
use serde_json::{Value, json};

const CELLS: usize = 24;
const GENES: usize = 6;

/// Writes three bundles and returns the description `check_fields.py` reads.
async fn sources(store: &DynStore) -> Value {
    let kinds = ["B cell", "T cell", "NK cell"];
    let organs = ["lung", "blood", "liver"];
    let mut described = Vec::new();
    let mut entries = Vec::new();
    for b in 0..3usize {
        let fqid = Fqid::parse(&format!(
            "0a1b2c3d-0000-4000-8000-00000000000{b}.2019-02-02T065454.662896Z"
        ))
        .unwrap();
        let cells: Vec<String> = (0..CELLS).map(|i| format!("c{i}")).collect();
        let cell_type: Vec<Option<&str>> = (0..CELLS)
            .map(|i| (i % 5 != 2).then(|| kinds[(i + b) % 3]))
            .collect();
        let score: Vec<Option<f64>> = (0..CELLS)
            .map(|i| (i % 7 != 1).then_some((i * (b + 1)) as f64 / 10.0))
            .collect();
        let doublet: Vec<Option<bool>> = (0..CELLS)
            .map(|i| (i % 6 != 4).then_some(i % 4 == 0))
            .collect();
        let age: Vec<Option<i64>> = (0..CELLS)
            .map(|i| (i % 3 != 0).then_some(i as i64 + 20))
            .collect();
        let mut obs = vec![
            ("cell_type".to_string(), Column::from_strings(&cell_type)),
            (
                "score".to_string(),
                Column::Num(score.iter().map(|v| v.unwrap_or(f64::NAN)).collect()),
            ),
            ("doublet".to_string(), Column::bools(&doublet)),
        ];
        // The third bundle has no `age`: its cells are null there.
        if b < 2 {
            obs.push(("age".to_string(), Column::ints(&age)));
        }
        let dense: Vec<u32> = (0..CELLS * GENES)
            .map(|k| ((k * 7 + b) % 5) as u32)
            .collect();
        let src = SourceMatrix {
            cells: cells.clone(),
            features: Features {
                ids: (0..GENES).map(|g| format!("ENSG{g}")).collect(),
                names: (0..GENES).map(|g| format!("G{g}")).collect(),
            },
            matrix: Csr::from_dense_rows(CELLS, GENES, &Values::U32(dense.clone())),
            obs,
        };
        let mut meta = cellmatrix::bundle::BundleMetadata {
            organ: Some(organs[b].into()),
            ..Default::default()
        };
        meta.set("batch", Scalar::Int(b as i64 + 1));
        let fs = write_feature_set(store, &src.features).await.unwrap();
        let out = write_bundle(
            store,
            &fqid,
            &src,
            &fs,
            &meta,
            SourceInfo {
                file: format!("b{b}"),
                format: "test".into(),
            },
            Layout {
                rows_per_chunk: 8,
                nnz_per_chunk: 64,
            },
        )
        .await
        .unwrap();
        entries.push((fqid.clone(), out.manifest().into()));
        for i in 0..CELLS {
            described.push(json!({
                "id": format!("{fqid}:{}", cells[i]),
                "organ": organs[b],
                "batch": b + 1,
                "cell_type": cell_type[i],
                "score": score[i],
                "doublet": doublet[i],
                "age": if b < 2 { json!(age[i]) } else { Value::Null },
                "counts": dense[i * GENES..(i + 1) * GENES],
            }));
        }
    }
    catalog::upsert(store, entries).await.unwrap();
    json!({"cells": described, "genes": (0..GENES).map(|g| format!("ENSG{g}")).collect::<Vec<_>>()})
}

/// The cases: a name the Python side selects with pandas, the `where` text and the
/// same condition as a filter tree.
fn cases() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        (
            "b_cells_lung_or_blood_not_doublet",
            "cell_type == 'B cell' and organ in ['lung', 'blood'] and not doublet",
            json!({"op": "and", "value": [
                {"op": "=", "field": "cell.cell_type", "value": "B cell"},
                {"op": "in", "field": "bundle.organ", "value": ["lung", "blood"]},
                {"op": "not", "value": [{"op": "=", "field": "cell.doublet", "value": true}]}
            ]}),
        ),
        (
            "age_null_or_high_score",
            "cell.age is null or (score > 1.5 and batch != 2)",
            json!({"op": "or", "value": [
                {"op": "is null", "field": "cell.age"},
                {"op": "and", "value": [
                    {"op": ">", "field": "cell.score", "value": 1.5},
                    {"op": "!=", "field": "bundle.batch", "value": 2}
                ]}
            ]}),
        ),
        (
            "not_in_types_with_age",
            "cell_type not in ['T cell'] and age >= 30",
            json!({"op": "and", "value": [
                {"op": "not in", "field": "cell.cell_type", "value": ["T cell"]},
                {"op": ">=", "field": "cell.age", "value": 30}
            ]}),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn annotations_filter_and_come_out_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore = Arc::new(FsStore::open(dir.path()).unwrap());
    every_case_in_every_format(store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn annotations_filter_and_come_out_in_every_format_on_moto_s3() {
    let store: DynStore = Arc::new(
        cellmatrix_tests::moto_store("open-fields", "svc")
            .await
            .unwrap(),
    );
    every_case_in_every_format(store).await;
}

async fn every_case_in_every_format(store: DynStore) {
    let described = sources(&store).await;
    let mut config = Config::new("test");
    config.poll_interval = std::time::Duration::from_millis(10);
    let app = App::in_process(config, store.clone(), |_| 4);
    let out = tempfile::tempdir().unwrap();
    let description = out.path().join("sources.json");
    std::fs::write(&description, described.to_string()).unwrap();
    let mut checks = Vec::new();
    for (name, text, tree) in cases() {
        let mut ids = Vec::new();
        for format in ["zarr", "h5ad", "loom", "mtx", "csv"] {
            for source in [json!({"where": text}), json!({"filter": tree})] {
                let mut body = source.clone();
                body["format"] = json!(format);
                body["fields"] = json!(["cell.*", "bundle.organ", "bundle.batch"]);
                let (id, status) = run_request(&app, &body).await;
                assert_eq!(
                    status["status"], "Succeeded",
                    "{name} {format} {body}: {status}"
                );
                ids.push(id.clone());
                let prefix = result_prefix(&store, &status);
                let local = download(&store, &prefix, &out.path().join(&id)).await;
                checks.push(json!({"case": name, "format": format, "path": local}));
            }
        }
        // `where` and the tree it means are one request.
        assert!(ids.chunks(2).all(|p| p[0] == p[1]), "{name}: {ids:?}");
    }
    let list = out.path().join("checks.json");
    std::fs::write(&list, Value::Array(checks).to_string()).unwrap();
    let said = run_python(
        "check_fields.py",
        &[description.as_os_str(), list.as_os_str()],
    );
    assert!(said.contains("ok fields 30"), "{said}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_where_texts_and_unknown_fields_are_400s_that_say_where() {
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore = Arc::new(FsStore::open(dir.path()).unwrap());
    sources(&store).await;
    let app = App::in_process(Config::new("test"), store, |_| 4);
    for (body, want) in [
        (json!({"where": "cell_type == "}), "position 13"),
        (
            json!({"where": "cel_type == 'B cell'"}),
            "unknown field cel_type",
        ),
        (json!({"where": "cell.score < 'x'"}), "must be a number"),
        (
            json!({"where": "cell_type < 'B'"}),
            "does not apply to string field",
        ),
        (
            json!({"where": "x == 1", "filter": {"op": "is null", "field": "cell.age"}}),
            "only one of",
        ),
        (
            json!({"bundle_fqids": ["0a1b2c3d-0000-4000-8000-000000000000.2019-02-02T065454.662896Z"],
                "fields": ["cell.nope"]}),
            "unknown field cell.nope",
        ),
    ] {
        let answer = cellmatrix::handlers::driver::handle(
            &app,
            "POST",
            "/v1/matrix",
            body.to_string().as_bytes(),
        )
        .await;
        assert_eq!(answer.status, 400, "{body}: {answer:?}");
        let message = answer.body["message"].as_str().unwrap();
        assert!(message.contains(want), "{body}: {message}");
    }
    // The fields, with the cells of each value, as pandas would count them.
    let fields =
        cellmatrix::handlers::driver::handle(&app, "GET", "/v1/fields/cell_type", b"").await;
    assert_eq!(fields.status, 200, "{fields:?}");
    let values = fields.body["values"].as_array().unwrap();
    let count = |v: &str| {
        values
            .iter()
            .find(|x| x["value"] == v)
            .map(|x| x["cells"].as_u64().unwrap())
    };
    // 3 bundles x 24 cells, every fifth (i % 5 == 2) null: 15 null, 57 valued, 19 each.
    assert_eq!(
        (count("B cell"), count("T cell"), count("NK cell")),
        (Some(19), Some(19), Some(19))
    );
    assert_eq!(fields.body["cells"], 57);
}

/// Real annotated data: scanpy's pbmc68k_reduced beside PBMC3k and Chung. The facet of
/// `bulk_labels` is pandas' `value_counts`, and a `where` over its categoricals and a
/// float keeps what pandas keeps.
#[tokio::test(flavor = "multi_thread")]
async fn real_annotations_are_counted_and_filtered_as_pandas_does() {
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore = Arc::new(FsStore::open(dir.path()).unwrap());
    cellmatrix_tests::ingest_real(&store).await;
    let reference: Value = serde_json::from_str(&run_python(
        "obs_reference.py",
        &["scanpy-pbmc68k".as_ref()],
    ))
    .unwrap();
    let path = std::path::PathBuf::from(reference["path"].as_str().unwrap());
    let report =
        cellmatrix::ingest::ingest(&store, &path, &cellmatrix::ingest::IngestOptions::default())
            .await
            .unwrap();
    let fqid = report.bundles[0].manifest().fqid.to_string();
    let mut config = Config::new("test");
    config.poll_interval = std::time::Duration::from_millis(10);
    let app = App::in_process(config, store.clone(), |_| 4);

    let field =
        cellmatrix::handlers::driver::handle(&app, "GET", "/v1/fields/bulk_labels", b"").await;
    assert_eq!(field.status, 200, "{field:?}");
    let got: std::collections::BTreeMap<String, u64> = field.body["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["value"].as_str().unwrap().to_string(),
                v["cells"].as_u64().unwrap(),
            )
        })
        .collect();
    let want: std::collections::BTreeMap<String, u64> =
        serde_json::from_value(reference["columns"]["bulk_labels"]["values"].clone()).unwrap();
    assert_eq!(got, want);
    assert_eq!(field.body["bundles"], 1);

    let body = json!({
        "where": "bulk_labels in ['CD14+ Monocyte', 'CD19+ B'] and phase != 'G1' and percent_mito < 0.05",
        "fields": ["cell.bulk_labels", "cell.phase", "cell.percent_mito", "cell.louvain"],
    });
    let (_, status) = run_request(&app, &body).await;
    assert_eq!(status["status"], "Succeeded", "{status}");
    let prefix = result_prefix(&store, &status);
    let out = tempfile::tempdir().unwrap();
    let local = download(&store, &prefix, out.path()).await;
    let said = run_python(
        "check_annotated.py",
        &[path.as_os_str(), fqid.as_ref(), local.as_os_str()],
    );
    assert!(said.contains("ok annotated"), "{said}");
}
