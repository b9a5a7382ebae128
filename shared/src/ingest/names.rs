//! Source column and key names made field names, with the notes that tell the user
//! which were changed: a renamed column is still the user's, under the name they must
//! query it by.

use crate::error::Error;
use crate::field::{Level, stored_names};

/// Stored names for `sources` (named `kind` in notes, e.g. "obs column"), in order;
/// two that meet are an error of `what`. Notes list the names that changed.
pub fn store(
    what: &str,
    level: Level,
    kind: &str,
    sources: &[String],
    notes: &mut Vec<String>,
) -> Result<Vec<String>, Error> {
    let stored = stored_names(level, sources.iter().map(String::as_str))
        .map_err(|e| Error::input(what, e))?;
    let mut renamed = Vec::new();
    for (source, (name, shadowed)) in sources.iter().zip(&stored) {
        if *shadowed {
            notes.push(format!(
                "{kind} {source:?} is kept as {}.{name}: {}.{} is computed by cellmatrix",
                level.name(),
                level.name(),
                crate::field::normalise(source),
            ));
        } else if name != source {
            renamed.push(format!("{source:?} as {}.{name}", level.name()));
        }
    }
    if !renamed.is_empty() {
        notes.push(format!(
            "{kind}s renamed to field names: {}",
            renamed.join(", ")
        ));
    }
    Ok(stored.into_iter().map(|(n, _)| n).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_say_what_changed() {
        let mut notes = Vec::new();
        let names = store(
            "x",
            Level::Cell,
            "obs column",
            &["n_genes".into(), "S_score".into(), "phase".into()],
            &mut notes,
        )
        .unwrap();
        assert_eq!(names, ["input_n_genes", "s_score", "phase"]);
        assert_eq!(
            notes,
            [
                "obs column \"n_genes\" is kept as cell.input_n_genes: cell.n_genes is computed by cellmatrix",
                "obs columns renamed to field names: \"S_score\" as cell.s_score",
            ]
        );
        let err = store(
            "x",
            Level::Cell,
            "obs column",
            &["A b".into(), "a_b".into()],
            &mut notes,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("\"A b\"") && err.contains("\"a_b\""), "{err}");
    }
}
