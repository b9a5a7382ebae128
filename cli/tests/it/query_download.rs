//! `cellmatrix query --output` against the real `cellmatrix serve`: the status counts the
//! result's files, the client lists them through `GET /v1/matrix/{id}/files` a page at a
//! time and downloads every one, byte for byte as the store holds them.

use std::path::PathBuf;

use serde_json::Value;

use crate::support::cli::{cellmatrix, samples};
use crate::support::files::files_under;
use crate::support::serve;

#[tokio::test(flavor = "multi_thread")]
async fn query_downloads_every_file_of_the_result_through_the_paged_list() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let s = samples();
    cellmatrix(&[
        "--store".as_ref(),
        store.as_os_str(),
        "ingest".as_ref(),
        s.join("pbmc3k_300").as_os_str(),
        "--metadata".as_ref(),
        s.join("pbmc3k_300.json").as_os_str(),
    ]);
    let (_server, base) = serve::serve(&store, &[("CELLMATRIX_LOG", "error")]).await;
    let out = dir.path().join("out");
    let stdout = cellmatrix(&[
        "query".as_ref(),
        "--url".as_ref(),
        base.as_ref(),
        "--filter".as_ref(),
        r#"{"op": ">=", "field": "cell.n_genes", "value": 500}"#.as_ref(),
        "--fields".as_ref(),
        "cell.barcode,cell.n_genes".as_ref(),
        "--json".as_ref(),
        "--output".as_ref(),
        out.as_os_str(),
    ]);
    let status: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let result = &status["result"];
    let location = PathBuf::from(result["location"].as_str().unwrap());
    let stored = files_under(&location);
    assert_eq!(result["n_files"], stored.len(), "{status}");
    let bytes: usize = stored.values().map(Vec::len).sum();
    assert_eq!(result["total_bytes"], bytes, "{status}");
    assert!(
        result.get("files").is_none(),
        "the status lists no files: {status}"
    );
    assert_eq!(
        files_under(&out),
        stored,
        "the download is the result, byte for byte"
    );

    // `cellmatrix cells`: the succeeded request's cell table, in both encodings.
    let id = status["id"].as_str().unwrap();
    let n_cells = result["n_cells"].as_u64().unwrap() as usize;
    let csv = cellmatrix(&[
        "cells".as_ref(),
        "--url".as_ref(),
        base.as_ref(),
        id.as_ref(),
    ]);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "cell,bundle,barcode,n_genes");
    assert_eq!(lines.len(), n_cells + 1);
    let jsonl = cellmatrix(&[
        "cells".as_ref(),
        "--url".as_ref(),
        base.as_ref(),
        id.as_ref(),
        "--format".as_ref(),
        "jsonl".as_ref(),
    ]);
    let rows: Vec<Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), n_cells);
    assert!(rows.iter().all(|r| r["n_genes"].as_u64().unwrap() >= 500));
    let first = lines[1].split(',').collect::<Vec<_>>();
    assert_eq!(rows[0]["cell"], first[0]);
    assert_eq!(rows[0]["bundle"], first[1]);
}
