//! Fully qualified bundle ids, `uuid.version`. They become object keys, so they are
//! validated strictly: lowercase hyphenated UUID, a dot, and a version timestamp of the
//! form `2019-02-02T065454.662896Z`.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, clip};

/// A validated bundle id.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct Fqid(String);

const VERSION_LEN: usize = "2019-02-02T065454.662896Z".len();

impl Fqid {
    /// Parses and validates `s`.
    pub fn parse(s: &str) -> Result<Self, Error> {
        let bad = |reason: &str| Error::InvalidId {
            kind: "fqid",
            value: clip(s),
            reason: format!(
                "{reason}; expected uuid.version like 0a1b2c3d-0000-4000-8000-000000000000.2019-02-02T065454.662896Z"
            ),
        };
        if s.len() != 36 + 1 + VERSION_LEN {
            return Err(bad("wrong length"));
        }
        // Before any slicing by byte offset: a multi-byte character across offset 36
        // would otherwise panic in `split_at`.
        if !s.is_ascii() {
            return Err(bad("characters other than ASCII"));
        }
        let (uuid, rest) = s.split_at(36);
        let version = rest
            .strip_prefix('.')
            .ok_or_else(|| bad("no '.' after the uuid"))?;
        if !is_uuid(uuid) {
            return Err(bad("the uuid part is not a lowercase hyphenated uuid"));
        }
        if !is_version(version) {
            return Err(bad(
                "the version part is not a timestamp YYYY-MM-DDTHHMMSS.ffffffZ",
            ));
        }
        Ok(Fqid(s.to_string()))
    }

    /// A new id from a uuid and a time.
    pub fn new(uuid: uuid::Uuid, at: time::OffsetDateTime) -> Self {
        let at = at.to_offset(time::UtcOffset::UTC);
        let version = format!(
            "{:04}-{:02}-{:02}T{:02}{:02}{:02}.{:06}Z",
            at.year(),
            u8::from(at.month()),
            at.day(),
            at.hour(),
            at.minute(),
            at.second(),
            at.microsecond()
        );
        Fqid(format!("{}.{version}", uuid.hyphenated()))
    }

    /// The uuid part.
    pub fn uuid(&self) -> &str {
        &self.0[..36]
    }

    /// The version part.
    pub fn version(&self) -> &str {
        &self.0[37..]
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        })
}

fn is_version(s: &str) -> bool {
    // YYYY-MM-DDTHHMMSS.ffffffZ
    let b = s.as_bytes();
    if b.len() != VERSION_LEN {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let num = |r: std::ops::Range<usize>| s[r].parse::<u32>().unwrap_or(u32::MAX);
    digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..17)
        && b[17] == b'.'
        && digits(18..24)
        && b[24] == b'Z'
        && (1..=12).contains(&num(5..7))
        && (1..=31).contains(&num(8..10))
        && num(11..13) < 24
        && num(13..15) < 60
        && num(15..17) < 61
}

impl FromStr for Fqid {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Fqid::parse(s)
    }
}

impl TryFrom<String> for Fqid {
    type Error = Error;
    fn try_from(s: String) -> Result<Self, Error> {
        Fqid::parse(&s)
    }
}

impl From<Fqid> for String {
    fn from(f: Fqid) -> String {
        f.0
    }
}

impl fmt::Display for Fqid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "0a1b2c3d-0000-4000-8000-000000000000.2019-02-02T065454.662896Z";

    #[test]
    fn accepts_a_real_fqid() {
        let f = Fqid::parse(GOOD).unwrap();
        assert_eq!(f.uuid(), "0a1b2c3d-0000-4000-8000-000000000000");
        assert_eq!(f.version(), "2019-02-02T065454.662896Z");
    }

    #[test]
    fn refuses_key_injection_and_junk() {
        for bad in [
            "",
            "../etc/passwd",
            "0a1b2c3d-0000-4000-8000-000000000000.2019-02-02T065454.662896Z/x",
            "0a1b2c3d-0000-4000-8000-00000000/../2019-02-02T065454.662896Z",
            "0a1b2c3d-0000-4000-8000-000000000000%2F019-02-02T065454.662896Z",
            "0A1B2C3D-0000-4000-8000-000000000000.2019-02-02T065454.662896Z",
            "0a1b2c3d-0000-4000-8000-000000000000.2019-13-02T065454.662896Z",
            "0a1b2c3d-0000-4000-8000-000000000000..019-02-02T065454.662896Z",
        ] {
            assert!(Fqid::parse(bad).is_err(), "{bad}");
        }
        // 62 bytes with a two-byte character across the uuid's end.
        let straddling = format!("{}\u{e9}{}", "a".repeat(35), "b".repeat(25));
        assert_eq!(straddling.len(), 62);
        assert!(Fqid::parse(&straddling).is_err());
        let long = "a".repeat(100_000);
        let msg = Fqid::parse(&long).unwrap_err().to_string();
        assert!(msg.len() < 400, "{msg}");
    }

    #[test]
    fn new_ids_parse() {
        let at = time::macros::datetime!(2019-02-02 06:54:54.662896 UTC);
        let f = Fqid::new(uuid::Uuid::nil(), at);
        assert_eq!(
            f.as_str(),
            "00000000-0000-0000-0000-000000000000.2019-02-02T065454.662896Z"
        );
        assert_eq!(Fqid::parse(f.as_str()).unwrap(), f);
    }
}
