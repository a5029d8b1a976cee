//! The routing map: which edges answer each client prefix, as the router's versioned
//! configuration. A new map is built from a round of decisions and replaces the old one
//! whole; the version moves only when an answer changed, and the last versions are kept
//! with what changed, so an operator can see when and why a prefix moved.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

use crate::decision::{Decision, DecisionSource, Millis};
use crate::prefix::ClientPrefix;

/// How many past versions (their changes) are kept.
pub const HISTORY: usize = 32;
/// Changes listed per version; a version that moved more prefixes says how many.
const CHANGES_LISTED: usize = 256;

/// What the map says for one prefix.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MapEntry {
    pub edges: Vec<String>,
    pub source: DecisionSource,
    pub scope_len: u8,
}

impl From<&Decision> for MapEntry {
    fn from(d: &Decision) -> Self {
        Self {
            edges: d.edges.clone(),
            source: d.source,
            scope_len: d.scope_len,
        }
    }
}

/// One prefix whose answer changed between two versions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub prefix: ClientPrefix,
    pub before: Option<Vec<String>>,
    pub after: Option<Vec<String>>,
    pub source: Option<DecisionSource>,
}

/// A version of the map and how it differs from the one before.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Version {
    pub version: u64,
    pub built_at_ms: Millis,
    pub changed: usize,
    pub changes: Vec<Change>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RoutingMap {
    pub version: u64,
    pub built_at_ms: Millis,
    pub entries: BTreeMap<ClientPrefix, MapEntry>,
}

impl RoutingMap {
    pub fn get(&self, prefix: &ClientPrefix) -> Option<&MapEntry> {
        self.entries.get(prefix)
    }

    /// The map that `decisions` describe, and the version record if anything changed
    /// (a prefix's edges or source, a prefix added or dropped). An unchanged round keeps
    /// the version, so a version number names one content.
    pub fn next(
        &self,
        decisions: impl IntoIterator<Item = Decision>,
        now: Millis,
    ) -> (RoutingMap, Option<Version>) {
        let entries: BTreeMap<ClientPrefix, MapEntry> = decisions
            .into_iter()
            .map(|d| (d.prefix, MapEntry::from(&d)))
            .collect();
        let mut changes = Vec::new();
        let mut changed = 0;
        let mut note = |change: Change| {
            changed += 1;
            if changes.len() < CHANGES_LISTED {
                changes.push(change);
            }
        };
        for (prefix, entry) in &entries {
            match self.entries.get(prefix) {
                Some(old) if old.edges == entry.edges && old.source == entry.source => {}
                old => note(Change {
                    prefix: *prefix,
                    before: old.map(|o| o.edges.clone()),
                    after: Some(entry.edges.clone()),
                    source: Some(entry.source),
                }),
            }
        }
        for (prefix, old) in &self.entries {
            if !entries.contains_key(prefix) {
                note(Change {
                    prefix: *prefix,
                    before: Some(old.edges.clone()),
                    after: None,
                    source: None,
                });
            }
        }
        if changed == 0 {
            let same = RoutingMap {
                entries,
                ..self.clone()
            };
            return (same, None);
        }
        let version = self.version + 1;
        (
            RoutingMap {
                version,
                built_at_ms: now,
                entries,
            },
            Some(Version {
                version,
                built_at_ms: now,
                changed,
                changes,
            }),
        )
    }
}

/// The last [`HISTORY`] versions, newest last.
#[derive(Debug, Clone, Default, Serialize)]
pub struct History {
    pub versions: VecDeque<Version>,
}

impl History {
    pub fn push(&mut self, version: Version) {
        if self.versions.len() == HISTORY {
            self.versions.pop_front();
        }
        self.versions.push_back(version);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::Reason;

    fn decision(prefix: &str, edge: &str, source: DecisionSource) -> Decision {
        Decision {
            prefix: prefix.parse().unwrap(),
            edges: vec![edge.to_owned()],
            source,
            scope_len: 24,
            needs_probe: false,
            rum_used: false,
            measured_as: None,
            reason: Reason::NoHealthyEdge,
            explain: Vec::new(),
        }
    }

    #[test]
    fn versions_move_only_when_an_answer_changes_and_say_what_changed() {
        let map = RoutingMap::default();
        let round = |a: &str, b: &str| {
            vec![
                decision("10.0.1.0/24", a, DecisionSource::Measured),
                decision("10.0.2.0/24", b, DecisionSource::Measured),
            ]
        };
        let (map, v1) = map.next(round("e1", "e2"), 1_000);
        let v1 = v1.expect("a first map is a change");
        assert_eq!((map.version, v1.changed), (1, 2));

        let (map, none) = map.next(round("e1", "e2"), 2_000);
        assert!(none.is_none());
        assert_eq!(
            (map.version, map.built_at_ms),
            (1, 1_000),
            "same content, same version"
        );

        let (map, v2) = map.next(round("e1", "e3"), 3_000);
        let v2 = v2.unwrap();
        assert_eq!(map.version, 2);
        assert_eq!(
            v2.changes,
            [Change {
                prefix: "10.0.2.0/24".parse().unwrap(),
                before: Some(vec!["e2".into()]),
                after: Some(vec!["e3".into()]),
                source: Some(DecisionSource::Measured),
            }]
        );
        assert_eq!(
            map.get(&"10.0.2.0/24".parse().unwrap())
                .map(|e| e.edges.clone()),
            Some(vec!["e3".to_owned()])
        );

        // A prefix that is no longer decided leaves the map.
        let (map, v3) = map.next(
            vec![decision("10.0.1.0/24", "e1", DecisionSource::Measured)],
            4_000,
        );
        assert_eq!(map.entries.len(), 1);
        assert_eq!(v3.unwrap().changes[0].after, None);
    }

    #[test]
    fn history_keeps_the_last_versions() {
        let mut history = History::default();
        let mut map = RoutingMap::default();
        for n in 0..(HISTORY as u64 + 5) {
            let edge = format!("e{}", n % 2);
            let (next, version) = map.next(
                vec![decision("10.0.1.0/24", &edge, DecisionSource::Measured)],
                n,
            );
            history.push(version.unwrap());
            map = next;
        }
        assert_eq!(history.versions.len(), HISTORY);
        assert_eq!(
            history.versions.back().map(|v| v.version),
            Some(map.version)
        );
        assert_eq!(history.versions.front().map(|v| v.version), Some(6));
    }
}
