//! Opening text inputs that may be gzipped, with a byte-count progress bar.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use indicatif::ProgressBar;

use crate::error::Error;

/// A buffered reader over a plain or gzipped file (by its `.gz` suffix or magic bytes),
/// counting compressed bytes read into `bar`.
pub fn open_text(path: &Path, bar: &ProgressBar) -> Result<Box<dyn BufRead>, Error> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    bar.set_length(len);
    let mut magic = [0u8; 2];
    let n = file.read(&mut magic).map_err(|e| Error::io(path, e))?;
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let counted = bar.wrap_read(file);
    if n == 2 && magic == [0x1f, 0x8b] {
        Ok(Box::new(BufReader::with_capacity(
            1 << 16,
            flate2::read::MultiGzDecoder::new(BufReader::new(counted)),
        )))
    } else {
        Ok(Box::new(BufReader::with_capacity(1 << 16, counted)))
    }
}

/// Turns a read error into an input error that names the file; a broken gzip stream
/// reads as corrupt or truncated.
pub fn read_error(path: &Path, e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::InvalidInput
        | std::io::ErrorKind::InvalidData
        | std::io::ErrorKind::UnexpectedEof => Error::input(
            path.display().to_string(),
            format!("corrupt or truncated: {e}"),
        ),
        _ => Error::io(path, e),
    }
}

/// All lines of a small text file (barcodes, features), without line endings.
pub fn read_lines(path: &Path) -> Result<Vec<String>, Error> {
    let reader = open_text(path, &ProgressBar::hidden())?;
    let mut out = Vec::new();
    for line in reader.lines() {
        let line = line.map_err(|e| read_error(path, e))?;
        let line = line.trim_end_matches('\r');
        if !line.is_empty() {
            out.push(line.to_string());
        }
    }
    Ok(out)
}
