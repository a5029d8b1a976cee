//! Configurations (delivery properties) and who may command them: which
//! configurations a trigger's references address, whether the requesting CDN owns
//! them (§4.7 `eperm`), and where the command must go next.
//!
//! A configuration is owned by one participant and named by its hostnames. Every URL
//! whose host no configuration names belongs to the local participant's default
//! configuration (the hostnames a deployment is reached by). A reference without a
//! host (a `content.ccid`, a pattern whose host holds a wildcard) addresses every
//! configuration the requester owns.

use serde::{Deserialize, Serialize};

use crate::pattern::{host_of, PatternMatch};
use crate::pid::CdnPid;
use crate::wire::{ErrorCode, ErrorDescription, References};

/// One configuration as this participant knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Configuration {
    pub id: String,
    pub owner: CdnPid,
    /// Lowercase, without ports.
    pub hostnames: Vec<String>,
    /// The participants we delegated it to (the owner's partners, or a partner's own
    /// partners when it delegates further).
    #[serde(default)]
    pub delegated_to: Vec<CdnPid>,
}

/// The configurations one command addresses, each with the references that address it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addressed {
    /// `None`: the local default configuration.
    pub configuration: Option<String>,
    pub owner: CdnPid,
    pub delegated_to: Vec<CdnPid>,
    pub references: References,
}

/// Every configuration this participant carries or owns.
#[derive(Debug, Clone)]
pub struct Catalog {
    local: CdnPid,
    configurations: Vec<Configuration>,
}

/// A reference's target before permission is checked.
enum Aim {
    Host(String),
    /// Every configuration the requester owns.
    Owned,
}

impl Catalog {
    pub fn new(local: CdnPid, configurations: Vec<Configuration>) -> Self {
        Catalog {
            local,
            configurations,
        }
    }

    pub fn local(&self) -> CdnPid {
        self.local
    }

    pub fn configurations(&self) -> &[Configuration] {
        &self.configurations
    }

    pub fn by_host(&self, host: &str) -> Option<&Configuration> {
        let host = host.to_ascii_lowercase();
        self.configurations
            .iter()
            .find(|c| c.hostnames.contains(&host))
    }

    /// Splits `references` by the configuration each addresses, or refuses the whole
    /// command with `eperm` naming what `requester` may not command.
    pub fn resolve(
        &self,
        requester: CdnPid,
        references: &References,
    ) -> Result<Vec<Addressed>, Box<ErrorDescription>> {
        let mut addressed: Vec<Addressed> = Vec::new();
        let url_aim = |url: &str| host_of(url).map_or(Aim::Owned, Aim::Host);
        let pattern_aim = |p: &PatternMatch| p.literal_host().map_or(Aim::Owned, Aim::Host);
        fn push<T: Clone>(list: &mut Option<Vec<T>>, item: &T) {
            list.get_or_insert_with(Vec::new).push(item.clone());
        }
        for url in references.content_urls.iter().flatten() {
            for i in self.place(requester, url_aim(url), url, &mut addressed)? {
                push(&mut addressed[i].references.content_urls, url);
            }
        }
        for url in references.metadata_urls.iter().flatten() {
            for i in self.place(requester, url_aim(url), url, &mut addressed)? {
                push(&mut addressed[i].references.metadata_urls, url);
            }
        }
        for ccid in references.content_ccid.iter().flatten() {
            for i in self.place(requester, Aim::Owned, ccid, &mut addressed)? {
                push(&mut addressed[i].references.content_ccid, ccid);
            }
        }
        for p in references.content_patterns.iter().flatten() {
            for i in self.place(requester, pattern_aim(p), &p.pattern, &mut addressed)? {
                push(&mut addressed[i].references.content_patterns, p);
            }
        }
        for p in references.metadata_patterns.iter().flatten() {
            for i in self.place(requester, pattern_aim(p), &p.pattern, &mut addressed)? {
                push(&mut addressed[i].references.metadata_patterns, p);
            }
        }
        Ok(addressed)
    }

    /// The entries of `addressed` (added as needed) a reference aimed at `aim` goes to.
    fn place(
        &self,
        requester: CdnPid,
        aim: Aim,
        what: &str,
        addressed: &mut Vec<Addressed>,
    ) -> Result<Vec<usize>, Box<ErrorDescription>> {
        let refuse = || {
            Box::new(ErrorDescription {
                error: ErrorCode::Eperm,
                references: References::default(),
                description: Some(format!(
                    "{requester} does not own the configuration of {}",
                    what.chars().take(200).collect::<String>()
                )),
            })
        };
        let targets: Vec<Option<&Configuration>> = match aim {
            Aim::Host(host) => {
                let found = self.by_host(&host);
                if found.map_or(self.local, |c| c.owner) != requester {
                    return Err(refuse());
                }
                vec![found]
            }
            Aim::Owned => {
                // The local default first.
                let mut owned: Vec<Option<&Configuration>> = Vec::new();
                if requester == self.local {
                    owned.push(None);
                }
                owned.extend(
                    self.configurations
                        .iter()
                        .filter(|c| c.owner == requester)
                        .map(Some),
                );
                if owned.is_empty() {
                    return Err(refuse());
                }
                owned
            }
        };
        Ok(targets
            .into_iter()
            .map(|configuration| {
                let id = configuration.map(|c| c.id.clone());
                if let Some(i) = addressed.iter().position(|a| a.configuration == id) {
                    return i;
                }
                addressed.push(Addressed {
                    configuration: id,
                    owner: configuration.map_or(self.local, |c| c.owner),
                    delegated_to: configuration.map_or_else(Vec::new, |c| c.delegated_to.clone()),
                    references: References::default(),
                });
                addressed.len() - 1
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(text: &str) -> CdnPid {
        text.parse().unwrap()
    }

    fn catalog() -> Catalog {
        Catalog::new(
            pid("AS64500:1"),
            vec![
                Configuration {
                    id: "own".into(),
                    owner: pid("AS64500:1"),
                    hostnames: vec!["live.b.test".into()],
                    delegated_to: vec![pid("AS64502:1")],
                },
                Configuration {
                    id: "from-a".into(),
                    owner: pid("AS64496:1"),
                    hostnames: vec!["live.a.test".into(), "cdn.a.test".into()],
                    delegated_to: vec![pid("AS64502:1")],
                },
            ],
        )
    }

    fn urls(list: &[&str]) -> References {
        References {
            content_urls: Some(list.iter().map(|u| (*u).to_owned()).collect()),
            ..References::default()
        }
    }

    #[test]
    fn hosts_of_urls() {
        assert_eq!(
            host_of("http://Live.A.test:8080/x").as_deref(),
            Some("live.a.test")
        );
        assert_eq!(host_of("HTTPS://u@h/x").as_deref(), Some("h"));
        assert_eq!(host_of("http://[::1]:80/").as_deref(), Some("[::1]"));
        assert_eq!(host_of("/just/a/path"), None);
        assert_eq!(host_of("http:///x"), None);
    }

    #[test]
    fn each_url_goes_to_the_configuration_its_host_names() {
        let found = catalog()
            .resolve(
                pid("AS64496:1"),
                &urls(&[
                    "http://live.a.test/p/s/1.m4s",
                    "http://CDN.a.test:80/p/s/2.m4s",
                ]),
            )
            .unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].configuration.as_deref(), Some("from-a"));
        assert_eq!(found[0].references.content_urls.as_ref().unwrap().len(), 2);
        assert_eq!(found[0].delegated_to, [pid("AS64502:1")]);
    }

    #[test]
    fn another_owners_configuration_is_eperm() {
        let refused = catalog()
            .resolve(pid("AS64496:1"), &urls(&["http://live.b.test/p/s/1.m4s"]))
            .unwrap_err();
        assert_eq!(refused.error, ErrorCode::Eperm);
        // Hosts no configuration names are the local default's: ours, not A's.
        assert!(catalog()
            .resolve(pid("AS64496:1"), &urls(&["http://127.0.0.1/p/s/1.m4s"]))
            .is_err());
        // The local operator may not command what it only carries.
        assert!(catalog()
            .resolve(pid("AS64500:1"), &urls(&["http://live.a.test/p/s/1.m4s"]))
            .is_err());
    }

    #[test]
    fn the_local_operator_owns_the_default_configuration() {
        let found = catalog()
            .resolve(
                pid("AS64500:1"),
                &urls(&[
                    "http://127.0.0.1:8080/p/s/1.m4s",
                    "http://live.b.test/p/s/1.m4s",
                ]),
            )
            .unwrap();
        let ids: Vec<_> = found.iter().map(|a| a.configuration.clone()).collect();
        assert_eq!(ids, [None, Some("own".to_owned())]);
    }

    #[test]
    fn a_pattern_without_a_literal_host_addresses_everything_the_requester_owns() {
        let references = References {
            content_patterns: Some(vec![PatternMatch::new("*/p/s/*")]),
            ..References::default()
        };
        let found = catalog().resolve(pid("AS64496:1"), &references).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].configuration.as_deref(), Some("from-a"));
        let local = catalog().resolve(pid("AS64500:1"), &references).unwrap();
        assert_eq!(local.len(), 2);
        // A participant that owns nothing here commands nothing.
        let stranger = catalog().resolve(pid("AS1:1"), &references).unwrap_err();
        assert_eq!(stranger.error, ErrorCode::Eperm);
        let literal = References {
            content_patterns: Some(vec![PatternMatch::new("http://live.a.test/p/*")]),
            ..References::default()
        };
        assert_eq!(
            catalog().resolve(pid("AS64496:1"), &literal).unwrap()[0]
                .configuration
                .as_deref(),
            Some("from-a")
        );
    }
}
