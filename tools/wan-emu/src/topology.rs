//! The topology (sites, their addresses, the link matrix) and the control messages,
//! parsed and validated before anything on the machine is touched.
//!
//! Every address must be in 127.0.0.0/8: the emulator only ever assigns and routes
//! loopback-range addresses, so a mistake here can never reach a real network.
//! Delays are given per unordered pair as a round-trip time (`rtt_ms`, half each way) or
//! as a one-way delay (`one_way_ms`); a link applies to both directions unless it is
//! `"directed": true`, then only `from → to`. Fields left out keep their current value
//! (all links start at 0 ms, no loss, no cap).

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use serde::{Deserialize, Serialize};

use crate::scheduler::Link;

/// The JSON topology file: `{"sites":[...],"links":[...]}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologySpec {
    pub sites: Vec<SiteSpec>,
    #[serde(default)]
    pub links: Vec<LinkSpec>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SiteSpec {
    pub name: String,
    pub addrs: Vec<String>,
    /// Written to `/etc/netns/<ns>/resolv.conf`; overrides `--resolver` for this site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolver: Option<String>,
}

/// One matrix entry, in the topology and in `{"set":{...}}` control lines.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    pub from: String,
    pub to: String,
    /// Round-trip time: each direction gets half.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
    /// One-way delay, for each direction the entry applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_way_ms: Option<f64>,
    /// Loss probability in `0..=1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    /// Bandwidth cap in kbit/s; 0 removes the cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_kbps: Option<u64>,
    /// Only `from → to` (else both directions).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub directed: bool,
}

/// A control line on stdin.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// Change one matrix entry; applies to packets enqueued after it.
    Set(LinkSpec),
    /// Print the counters.
    Stats {},
    /// Stop and clean up (as stdin EOF does).
    Stop {},
}

#[derive(Clone, Debug)]
pub struct Site {
    pub name: String,
    pub addrs: Vec<Ipv4Addr>,
    pub resolver: Option<Ipv4Addr>,
}

/// Sites validated: names usable in namespace names, addresses unique and loopback.
#[derive(Clone, Debug)]
pub struct Topology {
    pub sites: Vec<Site>,
    owner: HashMap<Ipv4Addr, usize>,
}

/// A change to some links: each `(from, to)` direction gets the given fields.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkPatch {
    pub directions: Vec<(usize, usize)>,
    pub one_way: Option<Duration>,
    pub loss: Option<f64>,
    /// `Some(None)` removes the cap.
    pub rate_kbps: Option<Option<u64>>,
}

impl LinkPatch {
    pub fn apply(&self, link: &mut Link) {
        if let Some(d) = self.one_way {
            link.one_way = d;
        }
        if let Some(p) = self.loss {
            link.loss = p;
        }
        if let Some(r) = self.rate_kbps {
            link.rate_kbps = r;
        }
    }
}

/// An address the emulator may assign: in 127.0.0.0/8, and not the network, broadcast
/// or 127.0.0.1 (kept as every namespace's own localhost).
pub fn loopback_addr(text: &str) -> anyhow::Result<Ipv4Addr> {
    let addr: Ipv4Addr = text
        .trim()
        .parse()
        .with_context(|| format!("`{text}` is not an IPv4 address"))?;
    ensure!(
        addr.is_loopback(),
        "{addr} is outside 127.0.0.0/8: wan-emu only uses loopback-range addresses"
    );
    ensure!(
        ![
            Ipv4Addr::new(127, 0, 0, 0),
            Ipv4Addr::new(127, 0, 0, 1),
            Ipv4Addr::new(127, 255, 255, 255)
        ]
        .contains(&addr),
        "{addr} is reserved (127.0.0.1 stays every namespace's localhost): pick another 127.x.y.z"
    );
    Ok(addr)
}

/// Names become part of namespace names and file paths: keep them plain.
pub fn check_name(what: &str, name: &str) -> anyhow::Result<()> {
    ensure!(
        !name.is_empty()
            && name.len() <= 32
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            && name.as_bytes()[0].is_ascii_alphanumeric(),
        "{what} `{name}`: use 1 to 32 of [A-Za-z0-9_-], starting with a letter or digit"
    );
    Ok(())
}

fn millis(what: &str, ms: f64) -> anyhow::Result<Duration> {
    ensure!(
        ms.is_finite() && (0.0..=60_000.0).contains(&ms),
        "{what} must be between 0 and 60000 ms, got {ms}"
    );
    Ok(Duration::from_secs_f64(ms / 1000.0))
}

impl Topology {
    pub fn new(sites: &[SiteSpec], global_resolver: Option<&str>) -> anyhow::Result<Self> {
        ensure!(!sites.is_empty(), "no sites: give --site or --topology");
        let global_resolver = global_resolver
            .map(|r| loopback_addr(r).context("--resolver"))
            .transpose()?;
        let mut names = HashSet::new();
        let mut owner = HashMap::new();
        let mut out = Vec::with_capacity(sites.len());
        for (i, spec) in sites.iter().enumerate() {
            check_name("site name", &spec.name)?;
            ensure!(
                names.insert(spec.name.as_str()),
                "site `{}` given twice",
                spec.name
            );
            ensure!(
                !spec.addrs.is_empty(),
                "site `{}` has no addresses",
                spec.name
            );
            let mut addrs = Vec::with_capacity(spec.addrs.len());
            for text in &spec.addrs {
                let addr = loopback_addr(text).with_context(|| format!("site `{}`", spec.name))?;
                if let Some(&other) = owner.get(&addr) {
                    let other: &SiteSpec = &sites[other];
                    bail!(
                        "{addr} is given to both `{}` and `{}`",
                        other.name,
                        spec.name
                    );
                }
                owner.insert(addr, i);
                addrs.push(addr);
            }
            let resolver = match &spec.resolver {
                Some(r) => Some(
                    loopback_addr(r).with_context(|| format!("site `{}` resolver", spec.name))?,
                ),
                None => global_resolver,
            };
            out.push(Site {
                name: spec.name.clone(),
                addrs,
                resolver,
            });
        }
        Ok(Topology { sites: out, owner })
    }

    /// The site owning `addr`.
    pub fn site_of(&self, addr: Ipv4Addr) -> Option<usize> {
        self.owner.get(&addr).copied()
    }

    pub fn index(&self, name: &str) -> anyhow::Result<usize> {
        self.sites
            .iter()
            .position(|s| s.name == name)
            .with_context(|| format!("no site `{name}`"))
    }

    /// Checks a matrix entry against the sites and turns it into a patch.
    pub fn patch(&self, spec: &LinkSpec) -> anyhow::Result<LinkPatch> {
        let from = self.index(&spec.from)?;
        let to = self.index(&spec.to)?;
        ensure!(
            from != to,
            "a link needs two different sites, got `{}` twice",
            spec.from
        );
        let one_way = match (spec.rtt_ms, spec.one_way_ms) {
            (Some(_), Some(_)) => bail!("give rtt_ms or one_way_ms, not both"),
            (Some(rtt), None) => Some(millis("rtt_ms", rtt)? / 2),
            (None, Some(ow)) => Some(millis("one_way_ms", ow)?),
            (None, None) => None,
        };
        if let Some(p) = spec.loss {
            ensure!(
                p.is_finite() && (0.0..=1.0).contains(&p),
                "loss must be in 0..=1, got {p}"
            );
        }
        let directions = if spec.directed {
            vec![(from, to)]
        } else {
            vec![(from, to), (to, from)]
        };
        Ok(LinkPatch {
            directions,
            one_way,
            loss: spec.loss,
            rate_kbps: spec.rate_kbps.map(|r| (r > 0).then_some(r)),
        })
    }
}

/// `--site NAME=ADDR[,ADDR...]`.
pub fn parse_site_flag(text: &str) -> anyhow::Result<SiteSpec> {
    let (name, addrs) = text
        .split_once('=')
        .with_context(|| format!("--site `{text}`: expected NAME=ADDR[,ADDR...]"))?;
    Ok(SiteSpec {
        name: name.trim().to_owned(),
        addrs: addrs.split(',').map(|a| a.trim().to_owned()).collect(),
        resolver: None,
    })
}

/// `--link FROM,TO,KEY=VALUE...` with the keys of a JSON link
/// (`rtt_ms`, `one_way_ms`, `loss`, `rate_kbps`, `directed`).
pub fn parse_link_flag(text: &str) -> anyhow::Result<LinkSpec> {
    let context = || {
        format!("--link `{text}`: expected FROM,TO,KEY=VALUE... (keys rtt_ms, one_way_ms, loss, rate_kbps, directed)")
    };
    let mut parts = text.split(',').map(str::trim);
    let from = parts
        .next()
        .filter(|s| !s.is_empty())
        .with_context(context)?;
    let to = parts
        .next()
        .filter(|s| !s.is_empty())
        .with_context(context)?;
    let mut spec = LinkSpec {
        from: from.to_owned(),
        to: to.to_owned(),
        ..LinkSpec::default()
    };
    for kv in parts {
        let (k, v) = kv.split_once('=').with_context(context)?;
        let bad = || format!("--link `{text}`: bad value for {k}");
        match k {
            "rtt_ms" => spec.rtt_ms = Some(v.parse().with_context(bad)?),
            "one_way_ms" => spec.one_way_ms = Some(v.parse().with_context(bad)?),
            "loss" => spec.loss = Some(v.parse().with_context(bad)?),
            "rate_kbps" => spec.rate_kbps = Some(v.parse().with_context(bad)?),
            "directed" => spec.directed = v.parse().with_context(bad)?,
            _ => return Err(anyhow::anyhow!("unknown key `{k}`")).with_context(context),
        }
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sites() -> Vec<SiteSpec> {
        vec![
            parse_site_flag("a=127.50.1.1,127.50.1.2").unwrap(),
            parse_site_flag("b=127.50.2.1").unwrap(),
        ]
    }

    #[test]
    fn only_loopback_addresses_are_accepted() {
        assert!(loopback_addr("127.50.1.1").is_ok());
        for bad in [
            "10.0.0.1",
            "192.168.1.1",
            "0.0.0.0",
            "::1",
            "127.0.0.1",
            "localhost",
            "127.1",
        ] {
            assert!(loopback_addr(bad).is_err(), "{bad} accepted");
        }
        let bad = vec![SiteSpec {
            name: "a".into(),
            addrs: vec!["10.1.1.1".into()],
            resolver: None,
        }];
        let err = Topology::new(&bad, None).unwrap_err();
        assert!(
            format!("{err:#}").contains("outside 127.0.0.0/8"),
            "{err:#}"
        );
        assert!(Topology::new(&sites(), Some("8.8.8.8")).is_err());
    }

    #[test]
    fn sites_are_validated_and_addresses_routed() {
        let t = Topology::new(&sites(), Some("127.50.2.1")).unwrap();
        assert_eq!(t.site_of("127.50.1.2".parse().unwrap()), Some(0));
        assert_eq!(t.site_of("127.50.2.1".parse().unwrap()), Some(1));
        assert_eq!(t.site_of("127.50.9.9".parse().unwrap()), None);
        assert_eq!(t.sites[0].resolver, Some(Ipv4Addr::new(127, 50, 2, 1)));

        let mut dup = sites();
        dup[1].addrs.push("127.50.1.1".into());
        assert!(Topology::new(&dup, None).is_err());
        let mut same_name = sites();
        same_name[1].name = "a".into();
        assert!(Topology::new(&same_name, None).is_err());
        assert!(Topology::new(&[parse_site_flag("a/b=127.50.1.1").unwrap()], None).is_err());
        assert!(Topology::new(&[], None).is_err());
    }

    #[test]
    fn links_parse_from_flags_and_json() {
        let t = Topology::new(&sites(), None).unwrap();
        let p = t
            .patch(&parse_link_flag("a,b,rtt_ms=40,loss=0.5,rate_kbps=0").unwrap())
            .unwrap();
        assert_eq!(
            p,
            LinkPatch {
                directions: vec![(0, 1), (1, 0)],
                one_way: Some(Duration::from_millis(20)),
                loss: Some(0.5),
                rate_kbps: Some(None),
            }
        );
        let p = t
            .patch(&parse_link_flag("b,a,one_way_ms=7,directed=true").unwrap())
            .unwrap();
        assert_eq!(p.directions, vec![(1, 0)]);
        assert_eq!(p.one_way, Some(Duration::from_millis(7)));
        assert_eq!((p.loss, p.rate_kbps), (None, None));

        let cmd: Command =
            serde_json::from_str(r#"{"set":{"from":"a","to":"b","rtt_ms":60}}"#).unwrap();
        let Command::Set(spec) = cmd else {
            panic!("{cmd:?}")
        };
        assert_eq!(
            t.patch(&spec).unwrap().one_way,
            Some(Duration::from_millis(30))
        );
        assert!(matches!(
            serde_json::from_str(r#"{"stats":{}}"#).unwrap(),
            Command::Stats {}
        ));

        for bad in [
            r#"{"from":"a","to":"c","rtt_ms":1}"#,
            r#"{"from":"a","to":"a","rtt_ms":1}"#,
            r#"{"from":"a","to":"b","rtt_ms":1,"one_way_ms":1}"#,
            r#"{"from":"a","to":"b","loss":1.5}"#,
            r#"{"from":"a","to":"b","rtt_ms":-1}"#,
        ] {
            let spec: LinkSpec = serde_json::from_str(bad).unwrap();
            assert!(t.patch(&spec).is_err(), "{bad} accepted");
        }
        assert!(serde_json::from_str::<LinkSpec>(r#"{"from":"a","to":"b","rtt":1}"#).is_err());
        assert!(parse_link_flag("a,b,speed=1").is_err());
        assert!(parse_link_flag("a").is_err());
    }
}
