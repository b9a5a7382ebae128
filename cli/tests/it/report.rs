//! `cellmatrix report` against the real `cellmatrix serve`: `query` ends with the
//! report's one line, the table lists the run, and the timeline SVG is rendered by a
//! real renderer (librsvg's `rsvg-convert`) to a PNG of the picture's size; the HTML page
//! holds the SVG inline and the table.

use std::process::Command;

use crate::support::cli::{cellmatrix, samples};
use crate::support::serve;

/// `rsvg-convert`, if installed. scripts/test installs it (and sets
/// `CELLMATRIX_TEST_PYTHON`): there a missing renderer fails the test; elsewhere the
/// rendering is skipped, saying so.
fn rsvg_convert() -> Option<&'static str> {
    let found = Command::new("rsvg-convert")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some("rsvg-convert");
    }
    assert!(
        std::env::var_os("CELLMATRIX_TEST_PYTHON").is_none(),
        "rsvg-convert is missing (Debian: apt-get install librsvg2-bin; scripts/test does)"
    );
    eprintln!("skipped the rendering: rsvg-convert is not installed (scripts/test installs it)");
    None
}

/// Width and height of a PNG, from its IHDR chunk.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && &png[12..16] == b"IHDR",
        "not a PNG"
    );
    let be = |b: &[u8]| u32::from_be_bytes(b.try_into().unwrap());
    (be(&png[16..20]), be(&png[20..24]))
}

#[tokio::test(flavor = "multi_thread")]
async fn report_draws_the_timeline_and_a_renderer_opens_it() {
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
    let (_server, base) = serve::serve(
        &store,
        &[
            ("CELLMATRIX_LOG", "error"),
            ("CELLMATRIX_CELLS_PER_WORKER", "64"),
        ],
    )
    .await;
    let stdout = cellmatrix(&[
        "query".as_ref(),
        "--url".as_ref(),
        base.as_ref(),
        "--filter".as_ref(),
        r#"{"op": ">=", "field": "cell.n_genes", "value": 500}"#.as_ref(),
    ]);
    let id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("request "))
        .unwrap_or_else(|| panic!("no id: {stdout}"))
        .to_string();
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("report: succeeded in "))
        .unwrap_or_else(|| panic!("query ends with no report line: {stdout}"));
    assert!(
        summary.contains("resolve ") && summary.contains("workers ") && summary.contains('$'),
        "{summary}"
    );

    let (svg, html) = (dir.path().join("t.svg"), dir.path().join("t.html"));
    let table = cellmatrix(&[
        "report".as_ref(),
        "--url".as_ref(),
        base.as_ref(),
        id.as_ref(),
        "--svg".as_ref(),
        svg.as_os_str(),
        "--html".as_ref(),
        html.as_os_str(),
    ]);
    assert!(table.contains("critical path: driver"), "{table}");
    assert!(
        table.lines().filter(|l| l.starts_with("task-")).count() > 1,
        "{table}"
    );
    assert!(table.contains("cost: $"), "{table}");
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(
        text.starts_with("<svg") && text.contains("worker"),
        "{}",
        &text[..200.min(text.len())]
    );
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("<svg") && page.contains("critical path"),
        "the page has both"
    );

    let Some(rsvg) = rsvg_convert() else {
        return;
    };
    let png = dir.path().join("t.png");
    let out = Command::new(rsvg)
        .arg(&svg)
        .arg("-o")
        .arg(&png)
        .output()
        .expect("run rsvg-convert");
    assert!(
        out.status.success(),
        "rsvg-convert failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let declared = |attr: &str| -> u32 {
        let at = text.find(&format!("{attr}=\"")).expect(attr) + attr.len() + 2;
        text[at..].split('"').next().unwrap().parse().unwrap()
    };
    let (w, h) = png_size(&std::fs::read(&png).unwrap());
    assert_eq!(
        (w, h),
        (declared("width"), declared("height")),
        "the PNG has the SVG's size"
    );
    assert_eq!(w, 1400);
}
