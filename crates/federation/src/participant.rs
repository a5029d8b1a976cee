//! Who this participant is (its configurations, its partners and what it delegates to
//! each) and what a command resolves to, without I/O: every configuration it knows
//! ([`Participant::catalog`]: ours and those partners delegated to us), and every server
//! and partner a command must reach with its share of the references, staged by tier
//! ([`Participant::assignments`]).

use std::collections::BTreeMap;

use streamcdn_cdni::wire::References;
use streamcdn_cdni::{Addressed, Assignment, Catalog, CdnPid, Configuration, TargetId};
use streamcdn_registry::{DeploymentRecord, NodeRecord};

/// A configuration this participant owns, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnConfiguration {
    pub id: String,
    /// Lowercase.
    pub hostnames: Vec<String>,
    pub origin: String,
    pub max_ttl_secs: Option<u64>,
}

/// What the registry says now: the partners' configurations deployed here and the
/// servers of the node directory.
#[derive(Debug, Clone, Default)]
pub struct World {
    pub deployments: Vec<DeploymentRecord>,
    pub nodes: Vec<NodeRecord>,
}

/// What the CIS knows of itself: who it is, what it owns, whom it delegates to.
#[derive(Debug, Clone)]
pub struct Participant {
    pub us: CdnPid,
    pub own: Vec<OwnConfiguration>,
    /// Each partner and the configuration ids we delegate to it.
    pub partners: BTreeMap<CdnPid, Vec<String>>,
}

impl Participant {
    /// The partners a configuration of ours is delegated to.
    pub fn delegated_to(&self, id: &str) -> Vec<CdnPid> {
        self.partners
            .iter()
            .filter(|(_, delegate)| delegate.iter().any(|d| d == id))
            .map(|(pid, _)| *pid)
            .collect()
    }

    /// Every configuration we know: ours, and those partners delegated to us.
    pub fn catalog(&self, deployments: &[DeploymentRecord]) -> Catalog {
        let mut configurations: Vec<Configuration> = self
            .own
            .iter()
            .map(|c| Configuration {
                id: c.id.clone(),
                owner: self.us,
                hostnames: c.hostnames.clone(),
                delegated_to: self.delegated_to(&c.id),
            })
            .collect();
        for d in deployments {
            let Ok(commander) = d.delegated_by.parse() else {
                continue;
            };
            configurations.push(Configuration {
                id: d.configuration.clone(),
                owner: commander,
                hostnames: d.hostnames.clone(),
                delegated_to: d
                    .delegated_to
                    .iter()
                    .filter_map(|p| p.parse().ok())
                    .collect(),
            });
        }
        Catalog::new(self.us, configurations)
    }

    /// Which cache of our servers an addressed configuration lives in: our own content
    /// (the default, and configurations we own) is `None`; a partner's, its id.
    fn cache_of(&self, addressed: &Addressed) -> Option<String> {
        if addressed.owner == self.us {
            None
        } else {
            addressed.configuration.clone()
        }
    }

    /// Every server and partner a command must reach, each with its share of the
    /// references, in stages by tier (partners with the edges).
    pub fn assignments(&self, addressed: &[Addressed], world: &World) -> Vec<Vec<Assignment>> {
        let mut shares: BTreeMap<TargetId, References> = BTreeMap::new();
        let mut assign = |target: TargetId, references: &References| {
            shares.entry(target).or_default().extend(references);
        };
        let control = |n: &NodeRecord| n.addresses.control.clone();
        for a in addressed {
            match self.cache_of(a) {
                None => {
                    for address in world.nodes.iter().filter_map(control) {
                        assign(TargetId::server(&address, None), &a.references);
                    }
                }
                Some(configuration) => {
                    let deployment = world
                        .deployments
                        .iter()
                        .find(|d| d.configuration == configuration);
                    let carrying = world
                        .nodes
                        .iter()
                        .filter(|n| deployment.is_some_and(|d| d.carried_by(n)));
                    for address in carrying.filter_map(control) {
                        let target = TargetId::server(&address, Some(configuration.clone()));
                        assign(target, &a.references);
                    }
                }
            }
            for pid in &a.delegated_to {
                assign(TargetId::Partner(*pid), &a.references);
            }
        }
        let mut stages: Vec<Vec<Assignment>> = Vec::new();
        let mut ranked: Vec<(usize, String, TargetId, References)> = shares
            .into_iter()
            .map(|(target, references)| {
                (target.stage_rank(), target.to_string(), target, references)
            })
            .collect();
        ranked.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let mut last = None;
        for (rank, _, target, references) in ranked {
            if last != Some(rank) {
                stages.push(Vec::new());
                last = Some(rank);
            }
            if let Some(stage) = stages.last_mut() {
                stage.push(Assignment { target, references });
            }
        }
        stages
    }
}
