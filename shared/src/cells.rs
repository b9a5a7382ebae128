//! The cell table: the obs of a request's selected cells (cell id, bundle, the requested
//! fields) as CSV or JSON lines, a block of rows at a time, before the matrix is ready.
//!
//! While the request runs it is read from the workers' parts of the tasks that are
//! done, in output order (the plans' groups in order, each group's tasks in order: the
//! order the consolidation places the parts in), so its rows are the final table's
//! with the rows of unfinished tasks left out. Once the request has succeeded, the
//! parts are gone and it is read from the consolidated Zarr, whose obs it then equals.
//! Both hold the same arrays under the same paths ([`ObsArrays`]), so one reader and
//! one encoder serve both.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};

use crate::convert::source::ObsArrays;
use crate::convert::tables::{csv_writer, finish, obs_header, push_obs_row};
use crate::error::Error;
use crate::layout::{OUT_ROWS_PER_CHUNK, PART_READS_IN_FLIGHT};
use crate::obs::{ColumnKind, ObsColumn, ObsValues};
use crate::part::part_row_chunk;
use crate::state::{DoneMarker, Keys, Plan, ResultRecord, get_json};
use crate::store::DynStore;
use crate::store::zarr::ZarrStore;

/// How the table is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// RFC 4180 CSV with a header line; a null is an empty field.
    Csv,
    /// One JSON object per line; a null is `null`.
    JsonLines,
}

impl Encoding {
    /// The media type of each.
    pub const CSV: &'static str = "text/csv";
    /// The media type of JSON lines.
    pub const JSON_LINES: &'static str = "application/x-ndjson";

    /// The encoding an `Accept` header asks for: CSV unless it names JSON lines (or
    /// only JSON lines' kin) first; `None` when it accepts neither.
    pub fn from_accept(accept: Option<&str>) -> Option<Encoding> {
        let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
            return Some(Encoding::Csv);
        };
        // Media ranges in the order given, those with q=0 refused; ties keep that order.
        let mut ranges: Vec<(f32, usize, &str)> = accept
            .split(',')
            .enumerate()
            .filter_map(|(i, range)| {
                let mut parts = range.split(';');
                let media = parts.next()?.trim();
                let q = parts
                    .filter_map(|p| p.trim().strip_prefix("q="))
                    .find_map(|q| q.trim().parse::<f32>().ok())
                    .unwrap_or(1.0);
                (q > 0.0).then_some((q, i, media))
            })
            .collect();
        ranges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        ranges
            .iter()
            .find_map(|(_, _, media)| match media.to_ascii_lowercase().as_str() {
                Self::CSV | "text/*" | "*/*" => Some(Encoding::Csv),
                Self::JSON_LINES | "application/jsonl" | "application/*" => {
                    Some(Encoding::JsonLines)
                }
                _ => None,
            })
    }

    /// Its media type.
    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Csv => "text/csv; charset=utf-8",
            Encoding::JsonLines => Self::JSON_LINES,
        }
    }
}

/// How much of the request a table covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coverage {
    /// Tasks whose cells it holds.
    pub tasks_covered: u64,
    /// Tasks in all, once every group is planned.
    pub tasks_total: Option<u64>,
    /// Whether it holds every selected cell: every task is done (or the request
    /// succeeded).
    pub complete: bool,
}

/// Where a run of the table's rows is read from.
#[derive(Debug, Clone)]
enum Source {
    /// A done task's part: its cells.
    Part { prefix: String, cells: u64 },
    /// The consolidated Zarr.
    Matrix { prefix: String, cells: u64 },
}

/// A request's cell table, ready to stream.
#[derive(Debug)]
pub struct CellTable {
    columns: Arc<Vec<ObsColumn>>,
    sources: Vec<Source>,
    /// What it covers.
    pub coverage: Coverage,
    keys: Keys,
}

impl CellTable {
    /// The table of a Running request: the parts of the tasks done so far, in output
    /// order. Reads the plans (one per planned group) and the done markers of the
    /// tasks done.
    pub async fn running(
        store: &DynStore,
        keys: &Keys,
        groups: u32,
        columns: &[ObsColumn],
    ) -> Result<Self, Error> {
        let (k_plans, k_dones) = (keys.plans(), keys.dones());
        let (plans, dones) =
            futures::try_join!(store.list(&k_plans), store.list(&k_dones)).map_err(Error::from)?;
        let done: HashSet<String> = dones.into_iter().map(|o| o.key).collect();
        let mut plan_keys: Vec<String> = plans.into_iter().map(|o| o.key).collect();
        // Keys carry the group zero-padded: key order is group order.
        plan_keys.sort();
        let reads: Vec<_> = plan_keys
            .iter()
            .map(|k| get_json::<Plan>(store, k))
            .collect();
        let plans: Vec<Option<Plan>> = stream::iter(reads)
            .buffered(PART_READS_IN_FLIGHT)
            .try_collect()
            .await?;
        let plans: Vec<Plan> = plans.into_iter().flatten().collect();
        let planned = plans.len() as u32 == groups;
        let tasks = plans.iter().flat_map(|p| &p.tasks);
        let total = tasks.clone().count() as u64;
        let covered: Vec<String> = tasks
            .map(|t| keys.done(&t.id))
            .filter(|k| done.contains(k))
            .collect();
        let markers: Vec<_> = covered
            .iter()
            .map(|k| get_json::<DoneMarker>(store, k))
            .collect();
        let markers: Vec<Option<DoneMarker>> = stream::iter(markers)
            .buffered(PART_READS_IN_FLIGHT)
            .try_collect()
            .await?;
        let sources = markers
            .into_iter()
            .flatten()
            .filter(|m| m.cells_out > 0)
            .map(|m| Source::Part {
                prefix: keys.part(&m.task),
                cells: m.cells_out,
            })
            .collect();
        let tasks_covered = covered.len() as u64;
        Ok(CellTable {
            columns: Arc::new(columns.to_vec()),
            sources,
            coverage: Coverage {
                tasks_covered,
                tasks_total: planned.then_some(total),
                complete: planned && tasks_covered == total,
            },
            keys: keys.clone(),
        })
    }

    /// The table of a Succeeded request: the consolidated Zarr at `zarr` (the result for
    /// zarr, the request's scratch Zarr a conversion read otherwise), all `tasks`.
    pub fn succeeded(
        keys: &Keys,
        zarr: &str,
        result: &ResultRecord,
        tasks: u64,
        columns: &[ObsColumn],
    ) -> Self {
        CellTable {
            columns: Arc::new(columns.to_vec()),
            sources: vec![Source::Matrix {
                prefix: zarr.to_string(),
                cells: result.n_cells,
            }],
            coverage: Coverage {
                tasks_covered: tasks,
                tasks_total: Some(tasks),
                complete: true,
            },
            keys: keys.clone(),
        }
    }

    /// Rows in the table.
    pub fn rows(&self) -> u64 {
        self.sources
            .iter()
            .map(|s| match s {
                Source::Part { cells, .. } | Source::Matrix { cells, .. } => cells,
            })
            .sum()
    }

    /// The column names: `cell`, `bundle`, then each obs column's name (its field's
    /// qualified name, `cell.bundle`, if it is `cell` or `bundle`).
    pub fn header(&self) -> Vec<String> {
        let mut names = vec!["cell".to_string(), "bundle".to_string()];
        names.extend(self.columns.iter().map(|c| {
            if matches!(c.name.as_str(), "cell" | "bundle") {
                c.field.clone()
            } else {
                c.name.clone()
            }
        }));
        names
    }

    /// The table's bytes: the header (CSV), then a block of rows at a time (a part, or
    /// a chunk of the consolidated rows), read one block ahead. A part read while the
    /// request ended (its cleanup may have removed chunks under the read) ends the
    /// stream with an error rather than with wrong rows.
    pub fn stream(
        self,
        store: DynStore,
        encoding: Encoding,
    ) -> BoxStream<'static, Result<Bytes, Error>> {
        let header = self.header();
        let first = match encoding {
            Encoding::Csv => obs_header(b',', &header[0], &header[1..]).map(Bytes::from),
            Encoding::JsonLines => Ok(Bytes::new()),
        };
        let names: Arc<Vec<String>> = Arc::new(header);
        let columns = self.columns;
        let keys = self.keys;
        let blocks = stream::iter(self.sources)
            .map(move |source| {
                let (store, columns, keys, names) =
                    (store.clone(), columns.clone(), keys.clone(), names.clone());
                source_blocks(store, source, columns, keys, names, encoding)
            })
            .flatten();
        stream::once(async move { first })
            .chain(blocks)
            .try_filter(|b| futures::future::ready(!b.is_empty()))
            .boxed()
    }
}

/// The encoded blocks of one source: its arrays opened once, then its rows in blocks,
/// one read ahead.
fn source_blocks(
    store: DynStore,
    source: Source,
    columns: Arc<Vec<ObsColumn>>,
    keys: Keys,
    names: Arc<Vec<String>>,
    encoding: Encoding,
) -> BoxStream<'static, Result<Bytes, Error>> {
    let (prefix, cells, part) = match source {
        Source::Part { prefix, cells } => (prefix, cells, true),
        Source::Matrix { prefix, cells } => (prefix, cells, false),
    };
    let block = if part {
        part_row_chunk(cells)
    } else {
        OUT_ROWS_PER_CHUNK
    };
    let open = async move {
        let storage = ZarrStore::new(store.clone(), &prefix).into_storage();
        let arrays = Arc::new(ObsArrays::open(&storage, &columns).await?);
        if arrays.len() != cells {
            return Err(Error::Corrupt {
                what: prefix,
                message: format!("{} cell ids, not {cells}", arrays.len()),
            });
        }
        let ranges: Vec<Range<u64>> = (0..cells.div_ceil(block))
            .map(|b| b * block..((b + 1) * block).min(cells))
            .collect();
        let reads = ranges.into_iter().map(move |rows| {
            let (arrays, columns, store, keys, names) = (
                arrays.clone(),
                columns.clone(),
                store.clone(),
                keys.clone(),
                names.clone(),
            );
            async move {
                let (ids, obs) = futures::try_join!(arrays.names(rows.clone()), arrays.obs(rows))?;
                if part {
                    let end = crate::state::end(&store, &keys).await?;
                    if end.result || end.cancelled {
                        return Err(Error::Cancelled(format!(
                            "request {} ended while its cell table was read from the parts; ask again",
                            keys.id()
                        )));
                    }
                }
                let kinds: Vec<ColumnKind> = columns.iter().map(|c| c.kind.clone()).collect();
                encode(&ids, &obs, &kinds, &names, encoding).map(Bytes::from)
            }
        });
        Ok::<_, Error>(stream::iter(reads).buffered(2))
    };
    stream::once(open).try_flatten().boxed()
}

/// The bundle of a cell id (`{fqid}:{barcode}`; an fqid holds no `:`).
fn bundle_of(id: &str) -> &str {
    id.split_once(':').map_or(id, |(b, _)| b)
}

/// Encodes rows: cell ids `ids` and their `obs` (of kinds `kinds`), named `names`
/// (`cell`, `bundle`, then the columns).
pub fn encode(
    ids: &[String],
    obs: &[ObsValues],
    kinds: &[ColumnKind],
    names: &[String],
    encoding: Encoding,
) -> Result<Vec<u8>, Error> {
    match encoding {
        Encoding::Csv => {
            let mut columns = Vec::with_capacity(obs.len() + 1);
            columns.push(ObsValues::Str(
                ids.iter().map(|i| bundle_of(i).to_string()).collect(),
            ));
            columns.extend(obs.iter().cloned());
            let mut all_kinds = Vec::with_capacity(kinds.len() + 1);
            all_kinds.push(ColumnKind::Str);
            all_kinds.extend(kinds.iter().cloned());
            let mut w = csv_writer();
            for (r, id) in ids.iter().enumerate() {
                push_obs_row(&mut w, id, &columns, &all_kinds, r)?;
            }
            finish(w)
        }
        Encoding::JsonLines => {
            let mut out = Vec::with_capacity(ids.len() * 128);
            for (r, id) in ids.iter().enumerate() {
                // Written in the header's order (a map would sort the keys).
                let values = [id.as_str().into(), bundle_of(id).into()]
                    .into_iter()
                    .chain(
                        obs.iter()
                            .zip(kinds)
                            .map(|(c, kind)| json_value(c, kind, r)),
                    );
                out.push(b'{');
                for (k, (name, value)) in names.iter().zip(values).enumerate() {
                    if k > 0 {
                        out.push(b',');
                    }
                    serde_json::to_writer(&mut out, name).map_err(json_error)?;
                    out.push(b':');
                    serde_json::to_writer(&mut out, &value).map_err(json_error)?;
                }
                out.push(b'}');
                out.push(b'\n');
            }
            Ok(out)
        }
    }
}

fn json_error(e: serde_json::Error) -> Error {
    Error::Output {
        format: "jsonl",
        message: e.to_string(),
    }
}

/// Row `r` of column `c` as JSON: a null (NaN, a masked value, a code -1) is `null`.
fn json_value(c: &ObsValues, kind: &ColumnKind, r: usize) -> serde_json::Value {
    use serde_json::Value;
    let masked = |mask: &Option<Vec<bool>>| mask.as_ref().is_some_and(|m| m[r]);
    match c {
        ObsValues::Str(v) => Value::from(v[r].as_str()),
        ObsValues::U32(v) => Value::from(v[r]),
        ObsValues::F64(v) => serde_json::Number::from_f64(v[r]).map_or(Value::Null, Value::Number),
        ObsValues::Codes(v) => match kind {
            ColumnKind::Categorical { categories } => usize::try_from(v[r])
                .ok()
                .and_then(|c| categories.get(c))
                .map_or(Value::Null, |s| Value::from(s.as_str())),
            _ => Value::Null,
        },
        ObsValues::I64 { mask, .. } | ObsValues::Bool { mask, .. } if masked(mask) => Value::Null,
        ObsValues::I64 { values, .. } => Value::from(values[r]),
        ObsValues::Bool { values, .. } => Value::from(values[r]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_picks_the_encoding() {
        for (accept, want) in [
            (None, Some(Encoding::Csv)),
            (Some(""), Some(Encoding::Csv)),
            (Some("*/*"), Some(Encoding::Csv)),
            (Some("text/csv"), Some(Encoding::Csv)),
            (Some("application/x-ndjson"), Some(Encoding::JsonLines)),
            (
                Some("text/csv;q=0.5, application/x-ndjson"),
                Some(Encoding::JsonLines),
            ),
            (Some("application/x-ndjson;q=0, */*"), Some(Encoding::Csv)),
            (Some("application/json"), None),
            (Some("image/png, text/html"), None),
        ] {
            assert_eq!(Encoding::from_accept(accept), want, "{accept:?}");
        }
    }

    #[test]
    fn rows_in_csv_and_json_lines() {
        let ids = vec!["b1.v:AAA".to_string(), "b1.v:a,\"b\"".to_string()];
        let kinds = vec![
            ColumnKind::Categorical {
                categories: vec!["B".into(), "T, NK".into()],
            },
            ColumnKind::F64,
            ColumnKind::Int { nullable: true },
            ColumnKind::Bool { nullable: false },
        ];
        let obs = vec![
            ObsValues::Codes(vec![1, -1]),
            ObsValues::F64(vec![0.5, f64::NAN]),
            ObsValues::I64 {
                values: vec![3, 0],
                mask: Some(vec![false, true]),
            },
            ObsValues::Bool {
                values: vec![true, false],
                mask: None,
            },
        ];
        let names: Vec<String> = ["cell", "bundle", "cell_type", "score", "age", "ok"]
            .map(String::from)
            .to_vec();
        let csv = encode(&ids, &obs, &kinds, &names, Encoding::Csv).unwrap();
        assert_eq!(
            String::from_utf8(csv).unwrap(),
            "b1.v:AAA,b1.v,\"T, NK\",0.5,3,True\n\"b1.v:a,\"\"b\"\"\",b1.v,,,,False\n"
        );
        let jsonl = encode(&ids, &obs, &kinds, &names, Encoding::JsonLines).unwrap();
        let lines: Vec<serde_json::Value> = String::from_utf8(jsonl)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            lines[0],
            serde_json::json!({"cell": "b1.v:AAA", "bundle": "b1.v", "cell_type": "T, NK",
                "score": 0.5, "age": 3, "ok": true})
        );
        assert_eq!(
            lines[1],
            serde_json::json!({"cell": "b1.v:a,\"b\"", "bundle": "b1.v", "cell_type": null,
                "score": null, "age": null, "ok": false})
        );
    }
}
