//! The run report as one self-contained HTML page: the timeline's SVG inline, then the
//! table. No script, no external file.

use cellmatrix::report::Report;

/// The page, from the timeline's SVG and the table's text.
pub fn page(r: &Report, svg: &str, table: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>cellmatrix run report {id}</title>\n\
         <style>body{{font-family:sans-serif;margin:1em}}pre{{font-size:12px}}</style>\n\
         </head>\n<body>\n<h1>Run report {id}</h1>\n<p>{summary}</p>\n{svg}\n\
         <pre>{table}</pre>\n</body>\n</html>\n",
        id = r.id,
        summary = escape(&r.summary()),
        svg = svg.trim_start_matches(|c| c != '<'),
        table = escape(table),
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
