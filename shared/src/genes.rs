//! The output gene space and the remapping of each bundle's columns into it. Pure.
//!
//! Without a subset, the genes are the union of the bundles' feature sets in first-seen
//! order: bundles in request order, each bundle's features in its own order. So a
//! request over bundles that share one feature set keeps that set's order, and the order
//! never depends on how the work was split. With a subset, each requested entry selects
//! the feature with that id, or else every feature with that name, in union order; the
//! output follows the order of the request.

use std::collections::HashMap;

use crate::bundle::Features;

/// The output genes: ids (the var index) and names.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GeneSpace {
    /// Gene ids, unique.
    pub ids: Vec<String>,
    /// Gene names, one per id.
    pub names: Vec<String>,
}

impl GeneSpace {
    /// The union of `sets` in first-seen order; a gene's name is the one it was first seen with.
    pub fn union<'a>(sets: impl IntoIterator<Item = &'a Features>) -> GeneSpace {
        let mut space = GeneSpace::default();
        let mut seen = std::collections::HashSet::new();
        for set in sets {
            for (id, name) in set.ids.iter().zip(&set.names) {
                if seen.insert(id.as_str()) {
                    space.ids.push(id.clone());
                    space.names.push(name.clone());
                }
            }
        }
        space
    }

    /// The genes of `self` selected by `wanted` (ids, else names), in the order asked.
    /// Err lists the entries that match nothing.
    pub fn subset(&self, wanted: &[String]) -> Result<GeneSpace, Vec<String>> {
        let by_id: HashMap<&str, usize> = self
            .ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.as_str(), i))
            .collect();
        let mut by_name: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, name) in self.names.iter().enumerate() {
            by_name.entry(name.as_str()).or_default().push(i);
        }
        let mut picked = Vec::new();
        let mut taken = vec![false; self.ids.len()];
        let mut missing = Vec::new();
        for w in wanted {
            let hits: Vec<usize> = match by_id.get(w.as_str()) {
                Some(&i) => vec![i],
                None => by_name.get(w.as_str()).cloned().unwrap_or_default(),
            };
            if hits.is_empty() {
                missing.push(w.clone());
            }
            for i in hits {
                if !std::mem::replace(&mut taken[i], true) {
                    picked.push(i);
                }
            }
        }
        if !missing.is_empty() {
            return Err(missing);
        }
        Ok(GeneSpace {
            ids: picked.iter().map(|&i| self.ids[i].clone()).collect(),
            names: picked.iter().map(|&i| self.names[i].clone()).collect(),
        })
    }

    /// Number of genes.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// For each column of `features`, its column in this space, or `None` when the
    /// request's subset leaves it out. (The worker remaps from ids alone, [`GeneIds`].)
    #[cfg(test)]
    pub fn remap(&self, features: &Features) -> Remap {
        Remap::between(&self.ids, &features.ids)
    }
}

/// The ids of a gene space or a feature set, read from its document without the names
/// (the parser skips them rather than allocating them): all a worker needs to remap.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct GeneIds {
    pub ids: Vec<String>,
}

/// A feature set's columns in the output gene space: for each, its output column, or
/// `None` when the request leaves it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remap {
    columns: Vec<Option<u32>>,
    identity: bool,
}

impl Remap {
    /// For each of `features`, its column in `space` (both lists of unique ids).
    pub fn between(space: &[String], features: &[String]) -> Remap {
        // The common case, without hashing every id.
        if Self::keeps_columns(space, features) {
            return Remap::identity(features.len() as u64);
        }
        let index: HashMap<&str, u32> = space
            .iter()
            .enumerate()
            .map(|(i, id)| (id.as_str(), i as u32))
            .collect();
        Remap::new(
            features
                .iter()
                .map(|id| index.get(id.as_str()).copied())
                .collect(),
        )
    }

    /// Whether the remap of `features` into `space` is the identity: the features are
    /// the space's first genes, in order.
    pub fn keeps_columns(space: &[String], features: &[String]) -> bool {
        space.get(..features.len()) == Some(features)
    }

    /// The remap of a feature set of `n` features that are the output's first genes.
    pub fn identity(n: u64) -> Remap {
        Remap {
            columns: (0..n.min(u64::from(u32::MAX)) as u32).map(Some).collect(),
            identity: true,
        }
    }

    pub fn new(columns: Vec<Option<u32>>) -> Remap {
        let identity = columns
            .iter()
            .enumerate()
            .all(|(i, &c)| c == Some(i as u32));
        Remap { columns, identity }
    }

    pub fn columns(&self) -> &[Option<u32>] {
        &self.columns
    }

    /// Whether every column stays where it is: the common request, whose bundles share
    /// one feature set and no subset. A worker then moves no column (see
    /// `part::keep_row`), which is most of its work per nonzero otherwise.
    pub fn is_identity(&self) -> bool {
        self.identity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(pairs: &[(&str, &str)]) -> Features {
        Features {
            ids: pairs.iter().map(|p| p.0.to_string()).collect(),
            names: pairs.iter().map(|p| p.1.to_string()).collect(),
        }
    }

    #[test]
    fn union_keeps_first_seen_order_and_names() {
        let a = features(&[("g2", "B"), ("g1", "A")]);
        let b = features(&[("g3", "C"), ("g1", "other"), ("g4", "A")]);
        let u = GeneSpace::union([&a, &b]);
        assert_eq!(u.ids, ["g2", "g1", "g3", "g4"]);
        assert_eq!(u.names, ["B", "A", "C", "A"]);
        assert_eq!(u.remap(&b).columns(), [Some(2), Some(1), Some(3)]);
        assert!(!u.remap(&b).is_identity());
        assert!(u.remap(&a).is_identity());
    }

    #[test]
    fn a_remap_between_ids_is_an_identity_only_for_the_spaces_first_genes_in_order() {
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let space = ids(&["g1", "g2", "g3"]);
        let prefix = Remap::between(&space, &ids(&["g1", "g2"]));
        assert!(prefix.is_identity());
        assert_eq!(prefix.columns(), [Some(0), Some(1)]);
        let gap = Remap::between(&space, &ids(&["g1", "g3"]));
        assert!(!gap.is_identity());
        assert_eq!(gap.columns(), [Some(0), Some(2)]);
        let longer = Remap::between(&space, &ids(&["g1", "g2", "g3", "g4"]));
        assert!(!longer.is_identity());
        assert_eq!(longer.columns(), [Some(0), Some(1), Some(2), None]);
        // The worker reads the documents' ids only.
        let json = serde_json::to_vec(&GeneSpace::union([&features(&[("g1", "A")])])).unwrap();
        let read: GeneIds = serde_json::from_slice(&json).unwrap();
        assert_eq!(read.ids, ["g1"]);
    }

    #[test]
    fn subset_by_id_or_name_in_request_order() {
        let u = GeneSpace::union([&features(&[("g1", "A"), ("g2", "B"), ("g3", "A")])]);
        let s = u.subset(&["B".into(), "A".into(), "g1".into()]).unwrap();
        assert_eq!(s.ids, ["g2", "g1", "g3"]);
        assert_eq!(
            s.remap(&features(&[("g1", "A"), ("g9", "Z")])).columns(),
            [Some(1), None]
        );
        assert_eq!(u.subset(&["nope".into()]).unwrap_err(), ["nope"]);
    }
}
