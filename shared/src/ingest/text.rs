//! Opening text inputs that may be gzipped, with a byte-count progress bar, and reading
//! their lines within the bounds of [`super::limits`].

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use indicatif::ProgressBar;

use super::limits::{
    MAX_ARRAY_BYTES, MAX_GZIP_RATIO, MAX_INFLATED_BYTES, MAX_LINE_BYTES, STRING_OVERHEAD,
};
use crate::error::Error;

/// A text input being read.
pub struct Text {
    /// The decompressed bytes.
    pub reader: Box<dyn BufRead>,
    /// The most bytes `reader` can yield: the file's size, or what a gzipped file may
    /// inflate to (reading past it is an error).
    pub max_bytes: u64,
    /// The file's size on disk.
    pub file_bytes: u64,
}

/// Opens a plain or gzipped file (by its magic bytes), counting compressed bytes read
/// into `bar`. A gzipped file that inflates past [`MAX_GZIP_RATIO`] times its size (or
/// [`MAX_INFLATED_BYTES`]) makes the reader fail with an error that says so.
pub fn open_text(path: &Path, bar: &ProgressBar) -> Result<Text, Error> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    bar.set_length(len);
    let mut magic = [0u8; 2];
    let n = file.read(&mut magic).map_err(|e| Error::io(path, e))?;
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let counted = bar.wrap_read(file);
    if n == 2 && magic == [0x1f, 0x8b] {
        let max_bytes = len.saturating_mul(MAX_GZIP_RATIO).min(MAX_INFLATED_BYTES);
        let inflated = flate2::read::MultiGzDecoder::new(BufReader::new(counted));
        Ok(Text {
            reader: Box::new(BufReader::with_capacity(
                1 << 16,
                Capped {
                    inner: inflated,
                    left: max_bytes,
                    max: max_bytes,
                    compressed: len,
                },
            )),
            max_bytes,
            file_bytes: len,
        })
    } else {
        Ok(Text {
            reader: Box::new(BufReader::with_capacity(1 << 16, counted)),
            max_bytes: len,
            file_bytes: len,
        })
    }
}

/// A reader that fails once more than `max` bytes have come out of `inner`.
struct Capped<R> {
    inner: R,
    left: u64,
    max: u64,
    compressed: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // One byte past the cap tells a stream that ends exactly there from a bomb.
        let want = buf
            .len()
            .min(usize::try_from(self.left + 1).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n as u64 > self.left {
            return Err(std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                format!(
                    "the gzip stream inflates past {} bytes ({} times its {} bytes; a gzip bomb?)",
                    self.max,
                    self.max / self.compressed.max(1),
                    self.compressed
                ),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Turns a read error into an input error that names the file; a broken gzip stream
/// reads as corrupt or truncated.
pub fn read_error(path: &Path, e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::FileTooLarge => Error::input(path.display().to_string(), e.to_string()),
        std::io::ErrorKind::InvalidInput
        | std::io::ErrorKind::InvalidData
        | std::io::ErrorKind::UnexpectedEof => Error::input(
            path.display().to_string(),
            format!("corrupt or truncated: {e}"),
        ),
        _ => Error::io(path, e),
    }
}

/// Reads one line into `line` (cleared first), at most [`MAX_LINE_BYTES`] long;
/// returns false at the end of the input.
pub fn next_line(reader: &mut dyn BufRead, line: &mut String, path: &Path) -> Result<bool, Error> {
    line.clear();
    let n = Read::take(&mut *reader, MAX_LINE_BYTES as u64 + 1)
        .read_line(line)
        .map_err(|e| read_error(path, e))?;
    if line.len() > MAX_LINE_BYTES {
        line.clear();
        line.shrink_to_fit();
        return Err(Error::input(
            path.display().to_string(),
            format!("a line is longer than {MAX_LINE_BYTES} bytes"),
        ));
    }
    Ok(n > 0)
}

/// All lines of a small text file (barcodes, features), without line endings.
pub fn read_lines(path: &Path) -> Result<Vec<String>, Error> {
    let mut text = open_text(path, &ProgressBar::hidden())?;
    let mut out = Vec::new();
    let mut held = 0u64;
    let mut line = String::new();
    while next_line(&mut text.reader, &mut line, path)? {
        let line = line.trim_end_matches(['\n', '\r']);
        if !line.is_empty() {
            // Each line costs a String: short lines take several times their bytes.
            held += STRING_OVERHEAD + line.len() as u64;
            if held > MAX_ARRAY_BYTES {
                return Err(Error::input(
                    path.display().to_string(),
                    format!("more lines than fit in {MAX_ARRAY_BYTES} bytes of memory"),
                ));
            }
            out.push(line.to_string());
        }
    }
    Ok(out)
}
