//! Delimited text rows shared by the mtx and csv outputs: quoting by the csv crate (a
//! field with the delimiter, a quote or a newline is quoted), numbers written exactly.

use super::encode::{push_f64, push_u32};
use crate::error::Error;
use crate::obs::{ColumnKind, ObsValues};

/// A writer of delimited records into memory.
pub type TextWriter = csv::Writer<Vec<u8>>;

fn writer(delimiter: u8) -> TextWriter {
    csv::WriterBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .flexible(true)
        .from_writer(Vec::with_capacity(1 << 16))
}

/// A tab-separated writer.
pub fn tsv_writer() -> TextWriter {
    writer(b'\t')
}

/// A comma-separated writer.
pub fn csv_writer() -> TextWriter {
    writer(b',')
}

fn text_error(e: impl std::fmt::Display) -> Error {
    Error::Output {
        format: "text",
        message: e.to_string(),
    }
}

/// Appends `field`, quoted as the csv crate quotes (only when it holds the delimiter, a
/// quote or a line break): for the per-row cell id, where a writer per row would cost
/// more than the row.
pub fn push_field(out: &mut Vec<u8>, field: &str, delimiter: u8) {
    let needs = field
        .bytes()
        .any(|b| b == delimiter || b == b'"' || b == b'\n' || b == b'\r');
    if needs {
        out.push(b'"');
        for b in field.bytes() {
            if b == b'"' {
                out.push(b'"');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(field.as_bytes());
    }
}

/// The bytes written so far.
pub fn finish(w: TextWriter) -> Result<Vec<u8>, Error> {
    w.into_inner().map_err(text_error)
}

/// A header line: `first` and then the column names.
pub fn obs_header(delimiter: u8, first: &str, columns: &[String]) -> Result<Vec<u8>, Error> {
    let mut w = writer(delimiter);
    w.write_field(first).map_err(text_error)?;
    for c in columns {
        w.write_field(c).map_err(text_error)?;
    }
    w.write_record(None::<&[u8]>).map_err(text_error)?;
    finish(w)
}

/// One obs line: the cell id and row `r` of every column (of kinds `kinds`); a null is
/// an empty field, which pandas and R read as missing.
pub fn push_obs_row(
    w: &mut TextWriter,
    name: &str,
    columns: &[ObsValues],
    kinds: &[ColumnKind],
    r: usize,
) -> Result<(), Error> {
    w.write_field(name).map_err(text_error)?;
    let mut num = Vec::with_capacity(24);
    for (c, kind) in columns.iter().zip(kinds) {
        num.clear();
        let null = |mask: &Option<Vec<bool>>| mask.as_ref().is_some_and(|m| m[r]);
        match c {
            ObsValues::Str(v) => w.write_field(&v[r]),
            ObsValues::U32(v) => {
                push_u32(&mut num, v[r]);
                w.write_field(&num)
            }
            ObsValues::F64(v) if v[r].is_nan() => w.write_field(""),
            ObsValues::F64(v) => {
                push_f64(&mut num, v[r]);
                w.write_field(&num)
            }
            ObsValues::Codes(v) => {
                let text = match kind {
                    ColumnKind::Categorical { categories } => usize::try_from(v[r])
                        .ok()
                        .and_then(|c| categories.get(c))
                        .map_or("", String::as_str),
                    _ => "",
                };
                w.write_field(text)
            }
            ObsValues::I64 { mask, .. } | ObsValues::Bool { mask, .. } if null(mask) => {
                w.write_field("")
            }
            ObsValues::I64 { values, .. } => {
                num.extend_from_slice(values[r].to_string().as_bytes());
                w.write_field(&num)
            }
            ObsValues::Bool { values, .. } => {
                w.write_field(if values[r] { "True" } else { "False" })
            }
        }
        .map_err(text_error)?;
    }
    w.write_record(None::<&[u8]>).map_err(text_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_and_numbers() {
        let mut w = tsv_writer();
        let cols = [
            ObsValues::Str(vec!["a\tb".into()]),
            ObsValues::U32(vec![7]),
            ObsValues::F64(vec![0.25]),
        ];
        let kinds = [ColumnKind::Str, ColumnKind::U32, ColumnKind::F64];
        push_obs_row(&mut w, "c\"1", &cols, &kinds, 0).unwrap();
        assert_eq!(
            String::from_utf8(finish(w).unwrap()).unwrap(),
            "\"c\"\"1\"\t\"a\tb\"\t7\t0.25\n"
        );
        assert_eq!(
            obs_header(b',', "cell", &["n_genes".into()]).unwrap(),
            b"cell,n_genes\n"
        );
        for field in ["plain", "a,b", "q\"uote", "line\nbreak", "tab\there"] {
            let mut w = csv_writer();
            w.write_record([field]).unwrap();
            let mut mine = Vec::new();
            push_field(&mut mine, field, b',');
            mine.push(b'\n');
            assert_eq!(mine, finish(w).unwrap(), "{field:?}");
        }
    }
}
