//! The authoritative DNS responder for the delivery zone, without I/O.
//!
//! [`respond`] is a pure function from one request's bytes (plus the resolver's address,
//! the transport and the [`Zone`]) to the response's bytes. It never reads a clock, never
//! touches a socket and never panics; the only outside input is the `decide` closure,
//! called for A/AAAA queries of the delivery name and nothing else.
//!
//! What it answers:
//!
//! | request                                     | response                                         |
//! |---------------------------------------------|--------------------------------------------------|
//! | fewer than 12 bytes, or QR=1                | nothing (`None`: drop)                            |
//! | opcode other than QUERY                     | NOTIMP                                           |
//! | header readable, rest malformed; QDCOUNT≠1  | FORMERR (same id, no question)                   |
//! | EDNS version ≠ 0                            | BADVERS with an OPT of version 0                 |
//! | malformed ECS option (RFC 7871 §6, §7.2.1)  | FORMERR (OPT echoed, without ECS)                |
//! | class ≠ IN, name outside `origin`, AXFR/IXFR| REFUSED, AA=0                                    |
//! | apex SOA / NS                               | the SOA / the NS set with in-zone glue            |
//! | delivery A / AAAA                           | `decide`'s addresses of that family, TTL `ttl`   |
//! | `<label>.rum.<origin>` A / AAAA             | likewise, `decide` told the label (measurement)  |
//! | `ingest.<origin>` A / AAAA                  | `decide` told `ingest`: ingest servers, TTL `ingest_ttl` |
//! | in-zone NS host A / AAAA                    | its glue addresses of that family                |
//! | ANY at an existing name                     | one synthesized `HINFO "RFC8482" ""` (RFC 8482)  |
//! | existing name, no data of that type         | NODATA: NOERROR, SOA in authority                |
//! | other name in the zone                      | NXDOMAIN, SOA in authority                       |
//!
//! Every in-zone answer has AA=1; RA is never set (this is not a resolver); RD and CD are
//! copied. Names match case-insensitively and the question is echoed byte for byte.
//! Responses are minimal: no NS set in the authority section of positive answers.
//!
//! **EDNS**: a request with an OPT gets an OPT back advertising [`EDNS_UDP_PAYLOAD`] and
//! the request's DO bit. **Truncation**: over UDP the response must fit
//! `min(client's advertised size, EDNS_UDP_PAYLOAD)` (512 without EDNS; sizes under 512
//! count as 512): we never send more than 1232 bytes over UDP, to stay clear of IP
//! fragmentation (DNS flag day 2020). Over TCP the limit is 65535. A response that does
//! not fit keeps its question and OPT, loses every record and gets TC=1.
//!
//! **ECS** (RFC 7871): a valid option is passed to `decide` and echoed with the same
//! family, source length and address, and the scope `decide` returned (clamped to 32 or
//! 128). Source length 0 means "do not use the client's subnet": `decide` sees only the
//! resolver's address and the scope is 0. Responses that do not depend on the client
//! (SOA, NS, NXDOMAIN, …) echo the option with scope 0. A scope in the query is ignored.
//! Unknown family, source length over the family's maximum, too few or too many address
//! octets, address bits set beyond the source length, or two ECS options: FORMERR.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::op::{
    Edns, Header, Message, MessageType, OpCode, Query as WireQuery, ResponseCode,
};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::rdata::{A, AAAA, HINFO, NS, SOA};
use hickory_proto::rr::{DNSClass, RData, Record};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

pub use hickory_proto::rr::{Name, RecordType};

/// The UDP payload size we advertise in our OPT record, and the most we ever send over UDP.
pub const EDNS_UDP_PAYLOAD: u16 = 1232;
/// The UDP limit for a request without EDNS (RFC 1035).
const CLASSIC_UDP_LIMIT: usize = 512;
/// The most a DNS message can be over TCP (two-byte length prefix).
const TCP_LIMIT: usize = 65535;

/// TTL of the delivery answers unless configured otherwise.
pub const DEFAULT_TTL: u32 = 20;
/// TTL of the ingest name's answers: short, so a publisher that reconnects after its
/// server was drained or died asks again soon and is sent to a live one.
pub const INGEST_TTL: u32 = 5;
/// The first label of the ingest name, `ingest.<origin>`.
pub const INGEST_LABEL: &str = "ingest";

/// ECS option code (RFC 7871).
const ECS_CODE: u16 = 8;
/// OPT pseudo-RR type (RFC 6891).
const OPT_TYPE: u16 = 41;

/// The delivery zone this server is authoritative for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Zone {
    /// The zone apex, e.g. `streamcdn.test.`.
    pub origin: Name,
    /// The name viewers resolve, e.g. `live.streamcdn.test.`; answered by `decide`.
    pub delivery: Name,
    /// `rum.<origin>`: every name one label below it is answered like the delivery name
    /// (browsers measuring fetch `<nonce>.rum.<origin>`, so the router learns which
    /// resolver asks for which client).
    pub measurement: Name,
    /// `ingest.<origin>`: publishers resolve it to ingest servers of their nearest
    /// cluster (SRT cannot go through the TCP load balancer). The delivery name, if the
    /// same, wins.
    pub ingest: Name,
    /// The zone's name servers, with the glue addresses of those inside the zone (the
    /// addresses of out-of-zone name servers are never served). The first is the SOA MNAME.
    pub nameservers: Vec<(Name, Vec<IpAddr>)>,
    /// SOA RNAME, `hostmaster.<origin>` by default.
    pub hostmaster: Name,
    /// SOA serial. There is no clock here: the caller bumps it (e.g. with the map version).
    pub serial: u32,
    /// TTL of the delivery-name A/AAAA answers (default 20 s).
    pub ttl: u32,
    /// TTL of the ingest name's A/AAAA answers (default [`INGEST_TTL`]).
    pub ingest_ttl: u32,
    /// TTL of the zone's fixed records: SOA, NS, glue, the ANY answer (default 3600 s).
    pub soa_ttl: u32,
    /// Negative-caching TTL (RFC 2308): the SOA MINIMUM, and the TTL of the SOA in NXDOMAIN
    /// and NODATA answers is `min(soa_ttl, negative_ttl)` (default 60 s).
    pub negative_ttl: u32,
    /// SOA REFRESH (default 3600 s).
    pub refresh: i32,
    /// SOA RETRY (default 600 s).
    pub retry: i32,
    /// SOA EXPIRE (default 1209600 s, two weeks).
    pub expire: i32,
}

/// Why a [`Zone`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZoneError {
    #[error("{what} {name:?} is not a valid host name: {reason}")]
    InvalidName {
        what: &'static str,
        name: String,
        reason: String,
    },
    #[error("{what} {name} is not inside the zone {origin}")]
    OutsideZone {
        what: &'static str,
        name: String,
        origin: String,
    },
    #[error("the zone needs at least one name server")]
    NoNameservers,
    #[error("name server {0} is listed twice")]
    DuplicateNameserver(String),
    #[error("name server {0} is inside the zone and needs at least one glue address")]
    MissingGlue(String),
    #[error("name server {0} is the delivery name: its A/AAAA answers would be ambiguous")]
    NameserverIsDelivery(String),
}

impl Zone {
    /// A zone with default TTLs and timers, from names in text (a trailing dot is optional;
    /// names are stored in lower case). The delivery name may be the apex itself; name
    /// servers inside the zone need glue addresses.
    pub fn new(
        origin: &str,
        delivery: &str,
        nameservers: &[(&str, Vec<IpAddr>)],
    ) -> Result<Zone, ZoneError> {
        let origin = parse_name("origin", origin)?;
        if origin.is_root() {
            return Err(invalid("origin", ".", "the root zone cannot be served"));
        }
        let delivery = parse_name("delivery name", delivery)?;
        if !origin.zone_of(&delivery) {
            return Err(ZoneError::OutsideZone {
                what: "delivery name",
                name: delivery.to_ascii(),
                origin: origin.to_ascii(),
            });
        }
        if nameservers.is_empty() {
            return Err(ZoneError::NoNameservers);
        }
        let mut servers: Vec<(Name, Vec<IpAddr>)> = Vec::with_capacity(nameservers.len());
        for (text, addrs) in nameservers {
            let name = parse_name("name server", text)?;
            if servers.iter().any(|(n, _)| n == &name) {
                return Err(ZoneError::DuplicateNameserver(name.to_ascii()));
            }
            if origin.zone_of(&name) {
                if addrs.is_empty() {
                    return Err(ZoneError::MissingGlue(name.to_ascii()));
                }
                if name == delivery {
                    return Err(ZoneError::NameserverIsDelivery(name.to_ascii()));
                }
            }
            servers.push((name, addrs.clone()));
        }
        let hostmaster = Name::from_ascii("hostmaster")
            .and_then(|h| h.append_domain(&origin))
            .map_err(|e| invalid("hostmaster", &origin.to_ascii(), &e.to_string()))?;
        let measurement = Name::from_ascii("rum")
            .and_then(|h| h.append_domain(&origin))
            .map_err(|e| invalid("measurement names", &origin.to_ascii(), &e.to_string()))?;
        let ingest = Name::from_ascii(INGEST_LABEL)
            .and_then(|h| h.append_domain(&origin))
            .map_err(|e| invalid("ingest name", &origin.to_ascii(), &e.to_string()))?;
        Ok(Zone {
            origin,
            delivery,
            measurement,
            ingest,
            nameservers: servers,
            hostmaster,
            serial: 1,
            ttl: DEFAULT_TTL,
            ingest_ttl: INGEST_TTL,
            soa_ttl: 3600,
            negative_ttl: 60,
            refresh: 3600,
            retry: 600,
            expire: 1_209_600,
        })
    }

    fn soa(&self) -> SOA {
        let mname = self
            .nameservers
            .first()
            .map_or_else(|| self.origin.clone(), |(n, _)| n.clone());
        SOA::new(
            mname,
            self.hostmaster.clone(),
            self.serial,
            self.refresh,
            self.retry,
            self.expire,
            self.negative_ttl,
        )
    }

    fn soa_record(&self, ttl: u32) -> Record {
        Record::from_rdata(self.origin.clone(), ttl, RData::SOA(self.soa()))
    }

    /// Glue addresses served for `name` (in-zone name servers only).
    fn glue_of<'z>(&'z self, name: &'z Name) -> impl Iterator<Item = IpAddr> + 'z {
        self.nameservers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_root(name) && self.origin.zone_of(n))
            .flat_map(|(_, addrs)| addrs.iter().copied())
    }

    fn is_glue_host(&self, name: &Name) -> bool {
        self.nameservers
            .iter()
            .any(|(n, a)| !a.is_empty() && n.eq_ignore_root(name) && self.origin.zone_of(n))
    }

    /// The label of a measurement name (`<label>.rum.<origin>`), if `name` is one.
    pub fn measurement_label<'n>(&self, name: &'n Name) -> Option<&'n [u8]> {
        let below = name.num_labels().checked_sub(1)?;
        (below == self.measurement.num_labels() && self.measurement.zone_of(name))
            .then(|| name.iter().next())
            .flatten()
    }

    /// Whether `name` (inside the zone) owns records or is an empty non-terminal above one.
    fn name_exists(&self, name: &Name) -> bool {
        if self.measurement_label(name).is_some() || name.eq_ignore_root(&self.measurement) {
            return true;
        }
        let in_zone_ns = self
            .nameservers
            .iter()
            .map(|(n, _)| n)
            .filter(|n| self.origin.zone_of(n));
        std::iter::once(&self.origin)
            .chain(std::iter::once(&self.delivery))
            .chain(std::iter::once(&self.ingest))
            .chain(in_zone_ns)
            .any(|node| name.zone_of(node))
    }
}

fn invalid(what: &'static str, name: &str, reason: &str) -> ZoneError {
    ZoneError::InvalidName {
        what,
        name: name.to_string(),
        reason: reason.to_string(),
    }
}

fn parse_name(what: &'static str, text: &str) -> Result<Name, ZoneError> {
    let trimmed = text.trim().trim_end_matches('.');
    if trimmed.is_empty() {
        return Err(invalid(what, text, "empty"));
    }
    for label in trimmed.split('.') {
        if label.is_empty() {
            return Err(invalid(what, text, "empty label"));
        }
        if label.len() > 63 {
            return Err(invalid(what, text, "label longer than 63 octets"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(invalid(
                what,
                text,
                "only letters, digits, '-' and '_' are allowed",
            ));
        }
    }
    let mut name = Name::from_ascii(trimmed).map_err(|e| invalid(what, text, &e.to_string()))?;
    name.set_fqdn(true);
    if name.len() > 255 {
        return Err(invalid(what, text, "longer than 255 octets"));
    }
    Ok(name.to_lowercase())
}

/// How the request arrived: decides the size limit of the response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// What the decision sees for one delivery-name query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Query<'a> {
    /// The address the request came from (normally the viewer's resolver).
    pub client: IpAddr,
    /// The EDNS Client Subnet: address (zero beyond the prefix) and source prefix length.
    /// `None` when the query had no ECS or had source prefix length 0.
    pub ecs: Option<(IpAddr, u8)>,
    /// The name asked, as the client spelled it (equal to `Zone::delivery` ignoring case,
    /// or a measurement name).
    pub qname: &'a Name,
    /// For a measurement name `<label>.rum.<origin>`, its label.
    pub measurement: Option<&'a [u8]>,
    /// The ingest name was asked (`Zone::ingest`): answer ingest servers, not edges.
    pub ingest: bool,
    /// `A` or `AAAA`.
    pub qtype: RecordType,
}

/// The decision for one query.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Answer {
    /// The chosen edges, best first, of either family: A answers get the IPv4 ones and
    /// AAAA answers the IPv6 ones, in this order. May be empty (NODATA).
    pub addrs: Vec<IpAddr>,
    /// The ECS scope prefix length the decision holds for (clamped to the family's
    /// maximum; ignored when the query had no ECS or source length 0).
    pub scope_len: u8,
}

/// A validated ECS option from the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ecs {
    addr: IpAddr,
    source: u8,
}

/// Why a request was answered FORMERR (kept for logs and tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FormErr {
    QuestionCount,
    Ecs(&'static str),
}

impl fmt::Display for FormErr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormErr::QuestionCount => f.write_str("QDCOUNT is not 1"),
            FormErr::Ecs(why) => write!(f, "invalid ECS option: {why}"),
        }
    }
}

/// Answers one DNS request. `None` means drop it: fewer than 12 bytes, or a response
/// (QR=1) arriving as a request. Otherwise the bytes of the response, never larger than
/// the transport allows (see the module documentation for every case).
///
/// `decide` is called at most once, and only for an A or AAAA query of `zone.delivery`,
/// of a measurement name (`Query::measurement`) or of the ingest name (`Query::ingest`).
pub fn respond(
    request: &[u8],
    client: IpAddr,
    transport: Transport,
    zone: &Zone,
    mut decide: impl FnMut(&Query<'_>) -> Answer,
) -> Option<Vec<u8>> {
    let header = Header::read(&mut BinDecoder::new(request)).ok()?;
    if header.metadata.message_type == MessageType::Response {
        return None;
    }
    let mut resp = Message::new(
        header.metadata.id,
        MessageType::Response,
        header.metadata.op_code,
    );

    // Checked before parsing: hickory-proto reserves room for QDCOUNT questions up front,
    // so a 12-byte request claiming 65535 of them would cost megabytes to reject.
    let one_question = header.counts.queries == 1;
    let parsed = if one_question {
        Message::from_vec(request).map_err(|e| e.to_string())
    } else {
        Err(FormErr::QuestionCount.to_string())
    };

    if header.metadata.op_code != OpCode::Query {
        // The header's flags mean what the opcode defines (RFC 6895 §2): for one we do
        // not implement we echo none of them, only the id and the opcode.
        resp.metadata.response_code = ResponseCode::NotImp;
        let mut limit = udp_limit(None);
        if let Ok(req) = &parsed {
            if let [q] = req.queries.as_slice() {
                resp.add_query(q.clone());
            }
            if let Some(edns) = &req.edns {
                resp.set_edns(our_edns(edns));
            }
            limit = udp_limit(req.edns.as_ref());
        }
        return finish(resp, size_limit(transport, limit));
    }

    // RD and CD are copied into a QUERY's response (RFC 1035 §4.1.1, RFC 4035 §3.2.2).
    resp.metadata.recursion_desired = header.metadata.recursion_desired;
    resp.metadata.checking_disabled = header.metadata.checking_disabled;

    let req = match parsed {
        Ok(req) => req,
        Err(why) => {
            tracing::debug!(id = header.metadata.id, "FORMERR: {why}");
            resp.metadata.response_code = ResponseCode::FormErr;
            return finish(resp, CLASSIC_UDP_LIMIT);
        }
    };
    let limit = size_limit(transport, udp_limit(req.edns.as_ref()));

    let question = match req.queries.as_slice() {
        [q] => q.clone(),
        _ => return formerr(resp, &req, FormErr::QuestionCount, limit),
    };
    resp.add_query(question.clone());

    let Some(req_edns) = &req.edns else {
        answer(&mut resp, &question, client, zone, None, &mut decide);
        return finish(resp, limit);
    };
    if req_edns.version() != 0 {
        resp.metadata.response_code = ResponseCode::BADVERS;
        resp.set_edns(our_edns(req_edns));
        return finish(resp, limit);
    }
    let ecs = match request_ecs(request) {
        Ok(ecs) => ecs,
        Err(why) => return formerr(resp, &req, FormErr::Ecs(why), limit),
    };
    let scope = answer(&mut resp, &question, client, zone, ecs, &mut decide);
    let mut edns = our_edns(req_edns);
    if let Some(ecs) = ecs {
        let scope = if ecs.source == 0 {
            0
        } else {
            scope.min(family_max(ecs.addr))
        };
        edns.options_mut()
            .insert(EdnsOption::Subnet(ClientSubnet::new(
                ecs.addr, ecs.source, scope,
            )));
    }
    resp.set_edns(edns);
    finish(resp, limit)
}

fn formerr(mut resp: Message, req: &Message, why: FormErr, limit: usize) -> Option<Vec<u8>> {
    tracing::debug!(id = req.metadata.id, "FORMERR: {why}");
    resp.queries.clear();
    resp.metadata.response_code = ResponseCode::FormErr;
    if let Some(edns) = &req.edns {
        resp.set_edns(our_edns(edns));
    }
    finish(resp, limit)
}

/// Fills the response for a well-formed single-question QUERY; returns the ECS scope the
/// answer depends on (0 unless `decide` was asked).
fn answer(
    resp: &mut Message,
    q: &WireQuery,
    client: IpAddr,
    zone: &Zone,
    ecs: Option<Ecs>,
    decide: &mut impl FnMut(&Query<'_>) -> Answer,
) -> u8 {
    let qname = &q.name;
    let qtype = q.query_type;
    if q.query_class != DNSClass::IN
        || !zone.origin.zone_of(qname)
        || matches!(qtype, RecordType::AXFR | RecordType::IXFR)
    {
        resp.metadata.response_code = ResponseCode::Refused;
        return 0;
    }
    resp.metadata.authoritative = true;
    if qtype == RecordType::OPT {
        // A meta type that cannot be asked for (RFC 6891 §6.1.1).
        resp.metadata.authoritative = false;
        resp.metadata.response_code = ResponseCode::FormErr;
        return 0;
    }

    let is_apex = qname.eq_ignore_root(&zone.origin);
    let is_delivery = qname.eq_ignore_root(&zone.delivery);
    let is_ingest = !is_delivery && qname.eq_ignore_root(&zone.ingest);
    let is_glue_host = zone.is_glue_host(qname);
    let measurement = zone.measurement_label(qname);
    let mut scope = 0;

    match qtype {
        RecordType::ANY
            if is_apex || is_delivery || is_ingest || is_glue_host || measurement.is_some() =>
        {
            // RFC 8482 §4.2: one synthesized HINFO instead of every RRset; no decision.
            let hinfo = HINFO::new("RFC8482".to_string(), String::new());
            resp.add_answer(Record::from_rdata(
                qname.clone(),
                zone.soa_ttl,
                RData::HINFO(hinfo),
            ));
        }
        RecordType::SOA if is_apex => {
            resp.add_answer(Record::from_rdata(
                qname.clone(),
                zone.soa_ttl,
                RData::SOA(zone.soa()),
            ));
        }
        RecordType::NS if is_apex => {
            for (ns, _) in &zone.nameservers {
                resp.add_answer(Record::from_rdata(
                    qname.clone(),
                    zone.soa_ttl,
                    RData::NS(NS(ns.clone())),
                ));
            }
            for (ns, _) in &zone.nameservers {
                for addr in zone.glue_of(ns) {
                    resp.add_additional(address_record(ns.clone(), zone.soa_ttl, addr));
                }
            }
        }
        RecordType::A | RecordType::AAAA if is_delivery || is_ingest || measurement.is_some() => {
            let query = Query {
                client,
                ecs: ecs.filter(|e| e.source > 0).map(|e| (e.addr, e.source)),
                qname,
                measurement,
                ingest: is_ingest,
                qtype,
            };
            let decision = decide(&query);
            scope = decision.scope_len;
            let ttl = if is_ingest { zone.ingest_ttl } else { zone.ttl };
            for addr in decision.addrs {
                if family_matches(qtype, addr) {
                    resp.add_answer(address_record(qname.clone(), ttl, addr));
                }
            }
        }
        RecordType::A | RecordType::AAAA if is_glue_host => {
            for addr in zone.glue_of(qname) {
                if family_matches(qtype, addr) {
                    resp.add_answer(address_record(qname.clone(), zone.soa_ttl, addr));
                }
            }
        }
        _ => {}
    }

    if resp.answers.is_empty() {
        if !zone.name_exists(qname) {
            resp.metadata.response_code = ResponseCode::NXDomain;
        }
        let ttl = zone.soa_ttl.min(zone.negative_ttl);
        resp.add_authority(zone.soa_record(ttl));
    }
    scope
}

fn family_matches(qtype: RecordType, addr: IpAddr) -> bool {
    matches!(
        (qtype, addr),
        (RecordType::A, IpAddr::V4(_)) | (RecordType::AAAA, IpAddr::V6(_))
    )
}

fn address_record(name: Name, ttl: u32, addr: IpAddr) -> Record {
    let data = match addr {
        IpAddr::V4(a) => RData::A(A(a)),
        IpAddr::V6(a) => RData::AAAA(AAAA(a)),
    };
    Record::from_rdata(name, ttl, data)
}

fn family_max(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// Our OPT for a request that carried `req`: our payload size, version 0, its DO bit.
fn our_edns(req: &Edns) -> Edns {
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_UDP_PAYLOAD);
    edns.set_version(0);
    edns.set_dnssec_ok(req.flags().dnssec_ok);
    edns
}

/// The UDP size limit for a request with this OPT (or none).
fn udp_limit(edns: Option<&Edns>) -> usize {
    match edns {
        None => CLASSIC_UDP_LIMIT,
        Some(e) => {
            usize::from(e.max_payload()).clamp(CLASSIC_UDP_LIMIT, usize::from(EDNS_UDP_PAYLOAD))
        }
    }
}

fn size_limit(transport: Transport, udp: usize) -> usize {
    match transport {
        Transport::Udp => udp,
        Transport::Tcp => TCP_LIMIT,
    }
}

/// Encodes `resp`; if it does not fit in `limit`, keeps the question and OPT, drops all
/// records and sets TC. An encoding failure gives a bare SERVFAIL.
fn finish(mut resp: Message, limit: usize) -> Option<Vec<u8>> {
    match resp.to_vec() {
        Ok(bytes) if bytes.len() <= limit => return Some(bytes),
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(id = resp.metadata.id, error = %e, "cannot encode response");
            return bare(&resp, ResponseCode::ServFail);
        }
    }
    resp.answers.clear();
    resp.authorities.clear();
    resp.additionals.clear();
    resp.metadata.truncation = true;
    match resp.to_vec() {
        Ok(bytes) if bytes.len() <= limit => Some(bytes),
        _ => bare(&resp, ResponseCode::ServFail),
    }
}

/// A header-only response (always fits, always encodes).
fn bare(resp: &Message, code: ResponseCode) -> Option<Vec<u8>> {
    let mut msg = Message::new(
        resp.metadata.id,
        MessageType::Response,
        resp.metadata.op_code,
    );
    msg.metadata.recursion_desired = resp.metadata.recursion_desired;
    msg.metadata.checking_disabled = resp.metadata.checking_disabled;
    msg.metadata.response_code = if code.high() == 0 {
        code
    } else {
        ResponseCode::ServFail
    };
    msg.to_vec().ok()
}

/// The request's ECS option, validated from its raw bytes (hickory-proto drops the option
/// length, so "too many address octets" can only be seen here). Called only after the
/// whole message parsed, so the walk below cannot meet a structure hickory rejected.
fn request_ecs(msg: &[u8]) -> Result<Option<Ecs>, &'static str> {
    let options = opt_options(msg).ok_or("unreadable OPT record")?;
    let mut found = None;
    for (code, data) in options {
        if code != ECS_CODE {
            continue;
        }
        if found.is_some() {
            return Err("more than one ECS option");
        }
        found = Some(parse_ecs(data)?);
    }
    Ok(found)
}

fn parse_ecs(data: &[u8]) -> Result<Ecs, &'static str> {
    let [f0, f1, source, _scope, address @ ..] = data else {
        return Err("shorter than 4 octets");
    };
    let family = u16::from_be_bytes([*f0, *f1]);
    let max: u8 = match family {
        1 => 32,
        2 => 128,
        _ => return Err("unknown family"),
    };
    if *source > max {
        return Err("source prefix length over the family's maximum");
    }
    if address.len() != usize::from(source.div_ceil(8)) {
        return Err("address length does not match the source prefix length");
    }
    let spare = source % 8;
    if spare != 0 {
        if let Some(last) = address.last() {
            if last & (0xFF >> spare) != 0 {
                return Err("address bits set beyond the source prefix length");
            }
        }
    }
    let addr = if family == 1 {
        let mut octets = [0u8; 4];
        octets[..address.len()].copy_from_slice(address);
        IpAddr::V4(Ipv4Addr::from(octets))
    } else {
        let mut octets = [0u8; 16];
        octets[..address.len()].copy_from_slice(address);
        IpAddr::V6(Ipv6Addr::from(octets))
    };
    Ok(Ecs {
        addr,
        source: *source,
    })
}

/// The (code, data) options of every OPT record in the additional section, or `None` if
/// the message cannot be walked.
fn opt_options(msg: &[u8]) -> Option<Vec<(u16, &[u8])>> {
    let count = |at: usize| -> Option<usize> { Some(usize::from(read_u16(msg, at)?)) };
    let (qd, an, ns, ar) = (count(4)?, count(6)?, count(8)?, count(10)?);
    let mut pos = 12;
    for _ in 0..qd {
        pos = skip_name(msg, pos)?.checked_add(4)?;
    }
    let mut options = Vec::new();
    for i in 0..an + ns + ar {
        pos = skip_name(msg, pos)?;
        let rtype = read_u16(msg, pos)?;
        let rdlen = usize::from(read_u16(msg, pos + 8)?);
        let start = pos + 10;
        let end = start.checked_add(rdlen)?;
        let rdata = msg.get(start..end)?;
        if i >= an + ns && rtype == OPT_TYPE {
            let mut at = 0;
            while at < rdata.len() {
                let code = read_u16(rdata, at)?;
                let len = usize::from(read_u16(rdata, at + 2)?);
                let data = rdata.get(at + 4..at + 4 + len)?;
                options.push((code, data));
                at += 4 + len;
            }
        }
        pos = end;
    }
    Some(options)
}

fn read_u16(buf: &[u8], at: usize) -> Option<u16> {
    let bytes = buf.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([bytes[0], bytes[1]]))
}

/// The position after the (possibly compressed) name at `pos`.
fn skip_name(msg: &[u8], mut pos: usize) -> Option<usize> {
    for _ in 0..128 {
        let len = *msg.get(pos)?;
        match len & 0xC0 {
            0xC0 => return pos.checked_add(2).filter(|end| *end <= msg.len()),
            0x00 if len == 0 => return Some(pos + 1),
            0x00 => pos = pos.checked_add(1 + usize::from(len))?,
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query as WireQuery;
    use hickory_proto::rr::rdata::opt::EdnsCode;
    use std::cell::{Cell, RefCell};
    use std::str::FromStr;

    fn zone() -> Zone {
        Zone::new(
            "streamcdn.test",
            "live.streamcdn.test.",
            &[
                (
                    "ns1.streamcdn.test",
                    vec!["127.0.0.53".parse().unwrap(), "::53".parse().unwrap()],
                ),
                ("ns2.streamcdn.test", vec!["127.0.0.54".parse().unwrap()]),
                ("ns.elsewhere.example", vec!["192.0.2.1".parse().unwrap()]),
            ],
        )
        .unwrap()
    }

    const RESOLVER: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn query_msg(qname: &str, qtype: RecordType) -> Message {
        let mut msg = Message::query();
        msg.add_query(WireQuery::query(name(qname), qtype));
        msg.metadata.recursion_desired = true;
        msg
    }

    fn with_edns(mut msg: Message, payload: u16, options: Vec<EdnsOption>) -> Message {
        let mut edns = Edns::new();
        edns.set_max_payload(payload);
        for o in options {
            edns.options_mut().insert(o);
        }
        msg.set_edns(edns);
        msg
    }

    fn edges() -> Answer {
        Answer {
            addrs: vec![
                "127.0.1.1".parse().unwrap(),
                "fd00::1".parse().unwrap(),
                "127.0.1.2".parse().unwrap(),
            ],
            scope_len: 24,
        }
    }

    fn ask_with(
        msg: &Message,
        transport: Transport,
        decide: impl FnMut(&Query<'_>) -> Answer,
    ) -> Message {
        let bytes = respond(&msg.to_vec().unwrap(), RESOLVER, transport, &zone(), decide)
            .expect("a response");
        let resp = Message::from_vec(&bytes).expect("our response parses");
        assert_eq!(resp.metadata.id, msg.metadata.id);
        assert_eq!(resp.metadata.message_type, MessageType::Response);
        assert!(!resp.metadata.recursion_available);
        resp
    }

    fn ask(msg: &Message) -> Message {
        ask_with(msg, Transport::Udp, |_| edges())
    }

    fn no_decide(_: &Query<'_>) -> Answer {
        panic!("decide must not be called for this query")
    }

    fn addrs(records: &[Record]) -> Vec<IpAddr> {
        records
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                _ => None,
            })
            .collect()
    }

    fn assert_soa_authority(resp: &Message) {
        assert!(resp.answers.is_empty());
        assert_eq!(resp.authorities.len(), 1);
        let soa = &resp.authorities[0];
        assert_eq!(soa.name, name("streamcdn.test."));
        assert_eq!(soa.ttl, 60);
        let RData::SOA(soa) = &soa.data else {
            panic!("not an SOA: {soa:?}")
        };
        assert_eq!(soa.minimum, 60);
    }

    fn ecs_of(resp: &Message) -> Option<ClientSubnet> {
        match resp.edns.as_ref()?.option(EdnsCode::Subnet)? {
            EdnsOption::Subnet(s) => Some(*s),
            _ => None,
        }
    }

    #[test]
    fn apex_soa_and_ns_with_glue() {
        let resp = ask_with(
            &query_msg("streamcdn.test.", RecordType::SOA),
            Transport::Udp,
            no_decide,
        );
        assert_eq!(resp.metadata.response_code, ResponseCode::NoError);
        assert!(resp.metadata.authoritative);
        assert_eq!(resp.answers.len(), 1);
        let RData::SOA(soa) = &resp.answers[0].data else {
            panic!("{resp:?}")
        };
        assert_eq!(soa.mname, name("ns1.streamcdn.test."));
        assert_eq!(soa.rname, name("hostmaster.streamcdn.test."));
        assert_eq!(soa.serial, 1);
        assert_eq!(resp.answers[0].ttl, 3600);

        let resp = ask_with(
            &query_msg("streamcdn.test.", RecordType::NS),
            Transport::Udp,
            no_decide,
        );
        assert!(resp.metadata.authoritative);
        let ns: Vec<Name> = resp
            .answers
            .iter()
            .map(|r| match &r.data {
                RData::NS(ns) => ns.0.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            ns,
            [
                name("ns1.streamcdn.test."),
                name("ns2.streamcdn.test."),
                name("ns.elsewhere.example.")
            ]
        );
        // Glue only for the in-zone name servers, A and AAAA.
        let glue: Vec<(Name, IpAddr)> = resp
            .additionals
            .iter()
            .map(|r| (r.name.clone(), addrs(std::slice::from_ref(r))[0]))
            .collect();
        assert_eq!(
            glue,
            [
                (name("ns1.streamcdn.test."), "127.0.0.53".parse().unwrap()),
                (name("ns1.streamcdn.test."), "::53".parse().unwrap()),
                (name("ns2.streamcdn.test."), "127.0.0.54".parse().unwrap()),
            ]
        );
    }

    #[test]
    fn nameserver_host_names_answer_their_glue() {
        let resp = ask_with(
            &query_msg("ns1.streamcdn.test.", RecordType::AAAA),
            Transport::Udp,
            no_decide,
        );
        assert!(resp.metadata.authoritative);
        assert_eq!(addrs(&resp.answers), ["::53".parse::<IpAddr>().unwrap()]);
        let resp = ask_with(
            &query_msg("ns2.streamcdn.test.", RecordType::AAAA),
            Transport::Udp,
            no_decide,
        );
        assert_eq!(resp.metadata.response_code, ResponseCode::NoError);
        assert_soa_authority(&resp);
    }

    #[test]
    fn delivery_a_from_decide_with_ttl_and_aa() {
        let seen = RefCell::new(Vec::new());
        let resp = ask_with(
            &query_msg("live.streamcdn.test.", RecordType::A),
            Transport::Udp,
            |q| {
                seen.borrow_mut()
                    .push((q.client, q.ecs, q.qname.clone(), q.qtype));
                edges()
            },
        );
        assert_eq!(
            *seen.borrow(),
            [(RESOLVER, None, name("live.streamcdn.test."), RecordType::A)]
        );
        assert_eq!(resp.metadata.response_code, ResponseCode::NoError);
        assert!(resp.metadata.authoritative);
        assert!(resp.metadata.recursion_desired);
        assert_eq!(
            addrs(&resp.answers),
            [
                "127.0.1.1".parse::<IpAddr>().unwrap(),
                "127.0.1.2".parse().unwrap()
            ]
        );
        assert!(resp.answers.iter().all(|r| r.ttl == 20));
        assert!(resp.authorities.is_empty() && resp.additionals.is_empty());
        assert!(
            resp.edns.is_none(),
            "no OPT in a response to a query without one"
        );

        let resp = ask(&query_msg("live.streamcdn.test.", RecordType::AAAA));
        assert_eq!(addrs(&resp.answers), ["fd00::1".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn aaaa_nodata_with_soa_when_decide_has_only_v4() {
        let resp = ask_with(
            &query_msg("live.streamcdn.test.", RecordType::AAAA),
            Transport::Udp,
            |_| Answer {
                addrs: vec!["127.0.1.1".parse().unwrap()],
                scope_len: 24,
            },
        );
        assert_eq!(resp.metadata.response_code, ResponseCode::NoError);
        assert!(resp.metadata.authoritative);
        assert_soa_authority(&resp);
    }

    #[test]
    fn other_types_at_delivery_are_nodata_without_decide() {
        for qtype in [
            RecordType::MX,
            RecordType::TXT,
            RecordType::CNAME,
            RecordType::SOA,
        ] {
            let resp = ask_with(
                &query_msg("live.streamcdn.test.", qtype),
                Transport::Udp,
                no_decide,
            );
            assert_eq!(
                resp.metadata.response_code,
                ResponseCode::NoError,
                "{qtype}"
            );
            assert_soa_authority(&resp);
        }
    }

    #[test]
    fn nxdomain_with_soa() {
        let resp = ask_with(
            &query_msg("nope.streamcdn.test.", RecordType::A),
            Transport::Udp,
            no_decide,
        );
        assert_eq!(resp.metadata.response_code, ResponseCode::NXDomain);
        assert!(resp.metadata.authoritative);
        assert_soa_authority(&resp);
        let resp = ask_with(
            &query_msg("a.live.streamcdn.test.", RecordType::A),
            Transport::Udp,
            no_decide,
        );
        assert_eq!(resp.metadata.response_code, ResponseCode::NXDomain);
    }

    #[test]
    fn empty_non_terminal_is_nodata() {
        let zone = Zone::new(
            "streamcdn.test",
            "a.b.streamcdn.test",
            &[("ns.example.net", vec![])],
        )
        .unwrap();
        let msg = query_msg("B.streamcdn.test.", RecordType::A);
        let bytes = respond(
            &msg.to_vec().unwrap(),
            RESOLVER,
            Transport::Udp,
            &zone,
            no_decide,
        )
        .unwrap();
        let resp = Message::from_vec(&bytes).unwrap();
        assert_eq!(resp.metadata.response_code, ResponseCode::NoError);
        assert_eq!(resp.authorities.len(), 1);
    }

    #[test]
    fn refused_outside_zone_and_rd_without_ra() {
        for (qname, class) in [
            ("example.com.", DNSClass::IN),
            ("test.", DNSClass::IN),
            ("notstreamcdn.test.", DNSClass::IN),
            (".", DNSClass::IN),
            ("live.streamcdn.test.", DNSClass::CH),
        ] {
            let mut msg = Message::query();
            let mut q = WireQuery::query(name(qname), RecordType::A);
            q.set_query_class(class);
            msg.add_query(q);
            msg.metadata.recursion_desired = true;
            let resp = ask_with(&msg, Transport::Udp, no_decide);
            assert_eq!(
                resp.metadata.response_code,
                ResponseCode::Refused,
                "{qname}"
            );
            assert!(resp.metadata.recursion_desired);
            assert!(!resp.metadata.recursion_available);
            assert!(!resp.metadata.authoritative);
            assert!(resp.answers.is_empty() && resp.authorities.is_empty());
            assert_eq!(resp.queries.len(), 1);
        }
        let resp = ask_with(
            &query_msg("streamcdn.test.", RecordType::AXFR),
            Transport::Tcp,
            no_decide,
        );
        assert_eq!(resp.metadata.response_code, ResponseCode::Refused);
    }

    #[test]
    fn names_are_case_insensitive_and_question_echoed() {
        let resp = ask(&query_msg("LiVe.StreamCDN.TEST.", RecordType::A));
        assert_eq!(addrs(&resp.answers).len(), 2);
        assert!(resp.queries[0].name.eq_case(&name("LiVe.StreamCDN.TEST.")));
        let resp = ask_with(
            &query_msg("STREAMCDN.test.", RecordType::NS),
            Transport::Udp,
            no_decide,
        );
        assert_eq!(resp.answers.len(), 3);
        let resp = ask_with(
            &query_msg("NOPE.STREAMCDN.TEST.", RecordType::A),
            Transport::Udp,
            no_decide,
        );
        assert_eq!(resp.metadata.response_code, ResponseCode::NXDomain);
    }

    #[test]
    fn ecs_echoed_with_scope_from_decide() {
        let subnet = ClientSubnet::from_str("203.0.113.0/24").unwrap();
        let msg = with_edns(
            query_msg("live.streamcdn.test.", RecordType::A),
            1232,
            vec![EdnsOption::Subnet(subnet)],
        );
        let seen = Cell::new(None);
        let resp = ask_with(&msg, Transport::Udp, |q| {
            seen.set(Some((q.client, q.ecs)));
            Answer {
                addrs: vec!["127.0.1.3".parse().unwrap()],
                scope_len: 20,
            }
        });
        assert_eq!(
            seen.get(),
            Some((RESOLVER, Some(("203.0.113.0".parse().unwrap(), 24))))
        );
        let edns = resp.edns.as_ref().expect("OPT echoed");
        assert_eq!(edns.max_payload(), EDNS_UDP_PAYLOAD);
        let echo = ecs_of(&resp).expect("ECS echoed");
        assert_eq!(echo.addr(), "203.0.113.0".parse::<IpAddr>().unwrap());
        assert_eq!(echo.source_prefix(), 24);
        assert_eq!(echo.scope_prefix(), 20);
        assert_eq!(
            addrs(&resp.answers),
            ["127.0.1.3".parse::<IpAddr>().unwrap()]
        );

        // IPv6, scope clamped to 128.
        let subnet = ClientSubnet::from_str("2001:db8:1::/48").unwrap();
        let msg = with_edns(
            query_msg("live.streamcdn.test.", RecordType::AAAA),
            1232,
            vec![EdnsOption::Subnet(subnet)],
        );
        let resp = ask_with(&msg, Transport::Udp, |q| {
            assert_eq!(q.ecs, Some(("2001:db8:1::".parse().unwrap(), 48)));
            Answer {
                addrs: vec!["fd00::9".parse().unwrap()],
                scope_len: 200,
            }
        });
        let echo = ecs_of(&resp).unwrap();
        assert_eq!((echo.source_prefix(), echo.scope_prefix()), (48, 128));

        // Answers that do not depend on the client: scope 0.
        let subnet = ClientSubnet::from_str("203.0.113.0/24").unwrap();
        let msg = with_edns(
            query_msg("nope.streamcdn.test.", RecordType::A),
            1232,
            vec![EdnsOption::Subnet(subnet)],
        );
        let resp = ask_with(&msg, Transport::Udp, no_decide);
        assert_eq!(ecs_of(&resp).unwrap().scope_prefix(), 0);
        assert_eq!(ecs_of(&resp).unwrap().source_prefix(), 24);
    }

    #[test]
    fn ecs_source_zero_decides_on_resolver_with_scope_zero() {
        let subnet = ClientSubnet::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0, 0);
        let msg = with_edns(
            query_msg("live.streamcdn.test.", RecordType::A),
            1232,
            vec![EdnsOption::Subnet(subnet)],
        );
        let seen = Cell::new(None);
        let resp = ask_with(&msg, Transport::Udp, |q| {
            seen.set(Some((q.client, q.ecs)));
            edges()
        });
        assert_eq!(seen.get(), Some((RESOLVER, None)));
        let echo = ecs_of(&resp).unwrap();
        assert_eq!((echo.source_prefix(), echo.scope_prefix()), (0, 0));
        assert_eq!(echo.addr(), IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!(addrs(&resp.answers).len(), 2);
    }

    #[test]
    fn invalid_ecs_is_formerr() {
        let cases: [(&str, Vec<u8>); 8] = [
            ("unknown family", vec![0, 3, 0, 0]),
            ("family 0 with a prefix", vec![0, 0, 8, 0, 10]),
            ("v4 source over 32", vec![0, 1, 33, 0, 1, 2, 3, 4, 0]),
            (
                "v6 source over 128",
                [vec![0, 2, 129, 0], vec![0; 17]].concat(),
            ),
            ("bits beyond source", vec![0, 1, 23, 0, 203, 0, 113]),
            ("too many octets", vec![0, 1, 16, 0, 203, 0, 0]),
            ("too few octets", vec![0, 1, 24, 0, 203, 0]),
            ("shorter than the fixed part", vec![0, 1, 0]),
        ];
        for (what, data) in cases {
            let msg = with_edns(
                query_msg("live.streamcdn.test.", RecordType::A),
                1232,
                vec![EdnsOption::Unknown(8, data)],
            );
            let bytes = respond(
                &msg.to_vec().unwrap(),
                RESOLVER,
                Transport::Udp,
                &zone(),
                no_decide,
            )
            .expect("a response");
            assert_eq!(&bytes[..2], &msg.metadata.id.to_be_bytes(), "{what}");
            assert_eq!(bytes[3] & 0x0F, 1, "FORMERR for {what}");
            if let Ok(resp) = Message::from_vec(&bytes) {
                assert!(resp.answers.is_empty(), "{what}");
                assert!(ecs_of(&resp).is_none(), "{what}");
            }
        }
        // Two ECS options.
        let s = ClientSubnet::from_str("203.0.113.0/24").unwrap();
        let msg = with_edns(
            query_msg("live.streamcdn.test.", RecordType::A),
            1232,
            vec![EdnsOption::Subnet(s), EdnsOption::Subnet(s)],
        );
        let resp = ask_with(&msg, Transport::Udp, no_decide);
        assert_eq!(resp.metadata.response_code, ResponseCode::FormErr);
        assert!(resp.edns.is_some(), "OPT still echoed");
    }

    #[test]
    fn truncation_udp_without_edns_tc_and_tcp_gets_all() {
        let hundred = || Answer {
            addrs: (0..100u8)
                .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 2, i)))
                .collect(),
            scope_len: 24,
        };
        let msg = query_msg("live.streamcdn.test.", RecordType::A);
        let resp = ask_with(&msg, Transport::Udp, |_| hundred());
        assert!(resp.metadata.truncation);
        assert!(resp.metadata.authoritative);
        assert!(
            resp.answers.is_empty() && resp.authorities.is_empty() && resp.additionals.is_empty()
        );
        assert_eq!(resp.queries.len(), 1);

        let resp = ask_with(&msg, Transport::Tcp, |_| hundred());
        assert!(!resp.metadata.truncation);
        assert_eq!(addrs(&resp.answers).len(), 100);

        // A client advertising 4096 still gets at most EDNS_UDP_PAYLOAD over UDP (1600+
        // bytes here): TC, with the OPT kept.
        let msg = with_edns(msg, 4096, vec![]);
        let bytes = respond(
            &msg.to_vec().unwrap(),
            RESOLVER,
            Transport::Udp,
            &zone(),
            |_| hundred(),
        )
        .unwrap();
        assert!(bytes.len() <= usize::from(EDNS_UDP_PAYLOAD));
        let resp = Message::from_vec(&bytes).unwrap();
        assert!(resp.metadata.truncation && resp.answers.is_empty());
        assert_eq!(resp.edns.unwrap().max_payload(), EDNS_UDP_PAYLOAD);

        // 60 addresses (~1000 bytes) fit in 1232 but not in 512.
        let sixty = || Answer {
            addrs: (0..60u8)
                .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 2, i)))
                .collect(),
            scope_len: 24,
        };
        let resp = ask_with(&msg, Transport::Udp, |_| sixty());
        assert!(!resp.metadata.truncation);
        assert_eq!(resp.answers.len(), 60);
        let small = with_edns(
            query_msg("live.streamcdn.test.", RecordType::A),
            100,
            vec![],
        );
        let resp = ask_with(&small, Transport::Udp, |_| sixty());
        assert!(resp.metadata.truncation, "sizes under 512 count as 512");
    }

    #[test]
    fn edns_echoed_and_badvers() {
        let mut msg = with_edns(query_msg("streamcdn.test.", RecordType::SOA), 4096, vec![]);
        msg.edns.as_mut().unwrap().set_dnssec_ok(true);
        let resp = ask_with(&msg, Transport::Udp, no_decide);
        let edns = resp.edns.expect("OPT echoed");
        assert_eq!(edns.max_payload(), 1232);
        assert_eq!(edns.version(), 0);
        assert!(edns.flags().dnssec_ok);

        msg.edns.as_mut().unwrap().set_version(1);
        let resp = ask_with(&msg, Transport::Udp, no_decide);
        // 16 is both BADVERS and BADSIG; hickory-proto decodes it as BADSIG.
        assert_eq!(u16::from(resp.metadata.response_code), 16);
        assert_eq!(resp.edns.unwrap().version(), 0);
        assert!(resp.answers.is_empty());
    }

    #[test]
    fn the_ingest_name_is_decided_as_ingest_with_its_short_ttl() {
        let mut asked = None;
        let resp = ask_with(
            &query_msg("Ingest.streamcdn.test.", RecordType::A),
            Transport::Udp,
            |q: &Query<'_>| {
                asked = Some((q.ingest, q.measurement.is_some()));
                edges()
            },
        );
        assert_eq!(asked, Some((true, false)));
        assert!(resp.metadata.authoritative);
        let ttls: Vec<u32> = resp.answers.iter().map(|r| r.ttl).collect();
        assert_eq!(ttls, [INGEST_TTL, INGEST_TTL], "the two IPv4 addresses");
        // The delivery name is not the ingest name.
        let mut ingest = Some(true);
        let resp = ask_with(
            &query_msg("live.streamcdn.test.", RecordType::A),
            Transport::Udp,
            |q: &Query<'_>| {
                ingest = Some(q.ingest);
                edges()
            },
        );
        assert_eq!(ingest, Some(false));
        assert!(resp.answers.iter().all(|r| r.ttl == DEFAULT_TTL));
        // No ingest server: NODATA, not NXDOMAIN (the name exists).
        let resp = ask_with(
            &query_msg("ingest.streamcdn.test.", RecordType::AAAA),
            Transport::Udp,
            |_: &Query<'_>| Answer::default(),
        );
        assert_eq!(resp.metadata.response_code, ResponseCode::NoError);
        assert!(resp.answers.is_empty());
        let resp = ask_with(
            &query_msg("ingest.streamcdn.test.", RecordType::MX),
            Transport::Udp,
            no_decide,
        );
        assert_eq!(resp.metadata.response_code, ResponseCode::NoError);
        assert!(resp.answers.is_empty());
    }

    #[test]
    fn measurement_names_are_decided_like_the_delivery_name() {
        let mut seen = None;
        let resp = ask_with(
            &query_msg("00ab12cd.RUM.streamcdn.test.", RecordType::A),
            Transport::Udp,
            |q: &Query<'_>| {
                seen = q.measurement.map(<[u8]>::to_vec);
                edges()
            },
        );
        assert_eq!(
            seen.as_deref(),
            Some(&b"00ab12cd"[..]),
            "the label, as asked"
        );
        assert_eq!(resp.metadata.response_code, ResponseCode::NoError);
        assert!(!resp.answers.is_empty());
        // The delivery name is no measurement name.
        let mut label = Some(Vec::new());
        ask_with(
            &query_msg("live.streamcdn.test.", RecordType::A),
            Transport::Udp,
            |q: &Query<'_>| {
                label = q.measurement.map(<[u8]>::to_vec);
                edges()
            },
        );
        assert_eq!(label, None);
        // rum.<zone> itself exists (no records); two labels below it do not.
        let resp = ask_with(
            &query_msg("rum.streamcdn.test.", RecordType::A),
            Transport::Udp,
            no_decide,
        );
        assert_eq!(resp.metadata.response_code, ResponseCode::NoError);
        assert!(resp.answers.is_empty());
        let resp = ask_with(
            &query_msg("a.b.rum.streamcdn.test.", RecordType::A),
            Transport::Udp,
            no_decide,
        );
        assert_eq!(resp.metadata.response_code, ResponseCode::NXDomain);
        // Other types: NODATA.
        let resp = ask_with(
            &query_msg("x.rum.streamcdn.test.", RecordType::MX),
            Transport::Udp,
            no_decide,
        );
        assert_eq!(resp.metadata.response_code, ResponseCode::NoError);
        assert!(resp.answers.is_empty());
    }

    #[test]
    fn any_gets_one_synthesized_hinfo() {
        for qname in [
            "streamcdn.test.",
            "live.streamcdn.test.",
            "ns1.streamcdn.test.",
            "x1.rum.streamcdn.test.",
        ] {
            let resp = ask_with(
                &query_msg(qname, RecordType::ANY),
                Transport::Udp,
                no_decide,
            );
            assert_eq!(resp.metadata.response_code, ResponseCode::NoError);
            assert!(resp.metadata.authoritative);
            assert_eq!(resp.answers.len(), 1, "{qname}");
            let RData::HINFO(h) = &resp.answers[0].data else {
                panic!("{resp:?}")
            };
            assert_eq!((&*h.cpu, &*h.os), (&b"RFC8482"[..], &b""[..]));
            assert!(resp.additionals.is_empty());
        }
        let resp = ask_with(
            &query_msg("nope.streamcdn.test.", RecordType::ANY),
            Transport::Udp,
            no_decide,
        );
        assert_eq!(resp.metadata.response_code, ResponseCode::NXDomain);
        let resp = ask_with(
            &query_msg("example.com.", RecordType::ANY),
            Transport::Udp,
            no_decide,
        );
        assert_eq!(resp.metadata.response_code, ResponseCode::Refused);
    }

    #[test]
    fn update_opcode_is_notimp() {
        let mut msg = query_msg("streamcdn.test.", RecordType::SOA);
        msg.metadata.op_code = OpCode::Update;
        let resp = ask_with(&msg, Transport::Udp, no_decide);
        assert_eq!(resp.metadata.response_code, ResponseCode::NotImp);
        assert_eq!(resp.metadata.op_code, OpCode::Update);
        assert!(resp.answers.is_empty());
        // RD and CD mean nothing to an opcode we do not implement: not echoed.
        msg.metadata.recursion_desired = true;
        msg.metadata.checking_disabled = true;
        let resp = ask_with(&msg, Transport::Udp, no_decide);
        assert!(!resp.metadata.recursion_desired && !resp.metadata.checking_disabled);
        // Unknown opcode, unparsable body: still NOTIMP with the id.
        let bytes = respond(
            &[0xAB, 0xCD, 0x78, 0, 0, 1, 0, 0, 0, 0, 0, 0, 7],
            RESOLVER,
            Transport::Udp,
            &zone(),
            no_decide,
        )
        .unwrap();
        assert_eq!(&bytes[..2], &[0xAB, 0xCD]);
        assert_eq!(bytes[3] & 0x0F, 4);
        // Only QR and the opcode among the flags; RD (bit 0 of byte 2) not echoed.
        assert_eq!(bytes[2] & 0x01, 0);
        assert_eq!(bytes[3] & 0x10, 0, "CD not echoed");
        assert_eq!((bytes[2] >> 3) & 0x0F, 15);
    }

    #[test]
    fn short_and_response_bytes_are_dropped() {
        let z = zone();
        assert_eq!(respond(&[], RESOLVER, Transport::Udp, &z, no_decide), None);
        assert_eq!(
            respond(&[1, 2, 3, 4, 5], RESOLVER, Transport::Udp, &z, no_decide),
            None
        );
        assert_eq!(
            respond(&[0; 11], RESOLVER, Transport::Tcp, &z, no_decide),
            None
        );
        let mut msg = query_msg("live.streamcdn.test.", RecordType::A);
        msg.metadata.message_type = MessageType::Response;
        assert_eq!(
            respond(
                &msg.to_vec().unwrap(),
                RESOLVER,
                Transport::Udp,
                &z,
                no_decide
            ),
            None
        );
    }

    #[test]
    fn readable_header_with_garbage_is_formerr_with_same_id() {
        let z = zone();
        // QDCOUNT 1, then a name running off the end.
        let garbage = [
            0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 9, b'x', b'y',
        ];
        let bytes = respond(&garbage, RESOLVER, Transport::Udp, &z, no_decide).unwrap();
        let resp = Message::from_vec(&bytes).unwrap();
        assert_eq!(resp.metadata.id, 0x1234);
        assert_eq!(resp.metadata.response_code, ResponseCode::FormErr);
        assert!(resp.metadata.recursion_desired && !resp.metadata.recursion_available);
        // Twelve bytes: no question at all.
        let bytes = respond(
            &[0x56, 0x78, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            RESOLVER,
            Transport::Udp,
            &z,
            no_decide,
        )
        .unwrap();
        let resp = Message::from_vec(&bytes).unwrap();
        assert_eq!(resp.metadata.id, 0x5678);
        assert_eq!(resp.metadata.response_code, ResponseCode::FormErr);
    }

    #[test]
    fn more_than_one_question_is_formerr() {
        let mut msg = query_msg("live.streamcdn.test.", RecordType::A);
        msg.add_query(WireQuery::query(name("streamcdn.test."), RecordType::SOA));
        let resp = ask_with(&msg, Transport::Udp, no_decide);
        assert_eq!(resp.metadata.response_code, ResponseCode::FormErr);
        assert!(resp.queries.is_empty() && resp.answers.is_empty());
        // A bare header claiming 65535 questions: FORMERR, cheaply.
        let header = [0x9A, 0xBC, 0, 0, 0xFF, 0xFF, 0, 0, 0, 0, 0, 0];
        let bytes = respond(&header, RESOLVER, Transport::Udp, &zone(), no_decide).unwrap();
        assert_eq!(&bytes[..2], &[0x9A, 0xBC]);
        assert_eq!(bytes[3] & 0x0F, 1);
    }

    #[test]
    fn decide_only_for_delivery_address_queries() {
        let calls = Cell::new(0);
        let z = zone();
        let queries = [
            ("live.streamcdn.test.", RecordType::A, 1),
            ("live.streamcdn.test.", RecordType::AAAA, 1),
            ("live.streamcdn.test.", RecordType::ANY, 0),
            ("live.streamcdn.test.", RecordType::MX, 0),
            ("streamcdn.test.", RecordType::A, 0),
            ("ns1.streamcdn.test.", RecordType::A, 0),
            ("x.live.streamcdn.test.", RecordType::A, 0),
            ("live.example.com.", RecordType::A, 0),
        ];
        for (qname, qtype, expected) in queries {
            calls.set(0);
            let msg = query_msg(qname, qtype);
            respond(&msg.to_vec().unwrap(), RESOLVER, Transport::Udp, &z, |_| {
                calls.set(calls.get() + 1);
                edges()
            })
            .unwrap();
            assert_eq!(calls.get(), expected, "{qname} {qtype}");
        }
    }

    #[test]
    fn zone_new_validates_names() {
        let ns = |n: &'static str| vec![(n, vec!["127.0.0.53".parse::<IpAddr>().unwrap()])];
        let z = Zone::new(
            "StreamCDN.test.",
            "LIVE.streamcdn.test",
            &ns("ns1.streamcdn.test"),
        )
        .unwrap();
        assert!(z.origin.eq_case(&name("streamcdn.test.")));
        assert!(z.delivery.is_fqdn());
        assert_eq!(z.ttl, 20);
        assert!(matches!(
            Zone::new("", "live.x", &ns("ns.x")),
            Err(ZoneError::InvalidName { .. })
        ));
        assert!(matches!(
            Zone::new(".", ".", &ns("ns.x")),
            Err(ZoneError::InvalidName { .. })
        ));
        assert!(matches!(
            Zone::new("a..b", "a..b", &ns("ns.x")),
            Err(ZoneError::InvalidName { .. })
        ));
        assert!(matches!(
            Zone::new("x y.test", "live.x", &ns("ns.x")),
            Err(ZoneError::InvalidName { .. })
        ));
        assert!(matches!(
            Zone::new("streamcdn.test", "live.other.test", &ns("ns.x")),
            Err(ZoneError::OutsideZone { .. })
        ));
        assert_eq!(
            Zone::new("streamcdn.test", "live.streamcdn.test", &[]),
            Err(ZoneError::NoNameservers)
        );
        assert!(matches!(
            Zone::new(
                "streamcdn.test",
                "live.streamcdn.test",
                &[("ns1.streamcdn.test", vec![])]
            ),
            Err(ZoneError::MissingGlue(_))
        ));
        assert!(matches!(
            Zone::new(
                "streamcdn.test",
                "live.streamcdn.test",
                &ns("live.streamcdn.test")
            ),
            Err(ZoneError::NameserverIsDelivery(_))
        ));
        let twice = [ns("ns1.streamcdn.test"), ns("NS1.streamcdn.test.")].concat();
        assert!(matches!(
            Zone::new("streamcdn.test", "live.streamcdn.test", &twice),
            Err(ZoneError::DuplicateNameserver(_))
        ));
        // Delivery at the apex is allowed: A/AAAA there come from decide.
        let z = Zone::new(
            "streamcdn.test",
            "streamcdn.test",
            &ns("ns1.streamcdn.test"),
        )
        .unwrap();
        let msg = query_msg("streamcdn.test.", RecordType::A);
        let bytes = respond(&msg.to_vec().unwrap(), RESOLVER, Transport::Udp, &z, |_| {
            edges()
        })
        .unwrap();
        assert_eq!(Message::from_vec(&bytes).unwrap().answers.len(), 2);
    }

    /// SplitMix64: a seeded generator without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
        fn byte(&mut self) -> u8 {
            self.next() as u8
        }
    }

    fn valid_seeds() -> Vec<Vec<u8>> {
        let ecs4 = EdnsOption::Subnet(ClientSubnet::from_str("203.0.113.0/24").unwrap());
        let ecs6 = EdnsOption::Subnet(ClientSubnet::from_str("2001:db8::/56").unwrap());
        let ecs0 = EdnsOption::Subnet(ClientSubnet::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0, 0));
        let mut out = Vec::new();
        for (qname, qtype) in [
            ("live.streamcdn.test.", RecordType::A),
            ("live.streamcdn.test.", RecordType::AAAA),
            ("streamcdn.test.", RecordType::NS),
            ("streamcdn.test.", RecordType::SOA),
            ("streamcdn.test.", RecordType::ANY),
            ("nope.streamcdn.test.", RecordType::A),
            ("example.com.", RecordType::A),
        ] {
            let plain = query_msg(qname, qtype);
            out.push(plain.to_vec().unwrap());
            for ecs in [&ecs4, &ecs6, &ecs0] {
                out.push(
                    with_edns(plain.clone(), 1232, vec![ecs.clone()])
                        .to_vec()
                        .unwrap(),
                );
            }
        }
        out
    }

    #[test]
    fn random_and_mutated_bytes_never_panic() {
        let seed = std::env::var("DNS_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        println!("random_and_mutated_bytes_never_panic: DNS_FUZZ_SEED={seed} (DNS_FUZZ_CASES to run more)");
        let mut rng = Rng(seed);
        let z = zone();
        let seeds = valid_seeds();
        let (mut rcodes, mut answered, mut truncated) = ([0usize; 16], 0, 0);
        let cases: usize = std::env::var("DNS_FUZZ_CASES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(10_000);
        for i in 0..cases {
            let bytes: Vec<u8> = if i % 2 == 0 {
                let len = rng.below(600);
                let mut b: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
                // Often make the header look like a plausible query.
                if b.len() >= 12 && rng.below(2) == 0 {
                    b[2] &= 0x01;
                    b[4] = 0;
                    b[5] = rng.below(3) as u8;
                }
                b
            } else {
                let mut b = seeds[rng.below(seeds.len())].clone();
                // One mutation usually, sometimes a few: most stay readable enough to
                // reach the zone logic.
                let mutations = if rng.below(4) == 0 {
                    2 + rng.below(3)
                } else {
                    1
                };
                for _ in 0..mutations {
                    match rng.below(10) {
                        0..=3 if !b.is_empty() => {
                            let at = rng.below(b.len());
                            b[at] = rng.byte();
                        }
                        4..=6 if !b.is_empty() => {
                            let at = rng.below(b.len());
                            b[at] ^= 1 << rng.below(8);
                        }
                        7 => {
                            let at = rng.below(b.len() + 1);
                            b.truncate(at);
                        }
                        8 => {
                            let at = rng.below(b.len() + 1);
                            b.insert(at, rng.byte());
                        }
                        _ if b.len() >= 4 => {
                            // Header flags and opcode only.
                            b[2] = rng.byte() & 0x7F;
                            b[3] = rng.byte();
                        }
                        _ => {}
                    }
                }
                b
            };
            let scope = rng.byte();
            let n = rng.below(120);
            let decide = |_: &Query<'_>| Answer {
                addrs: fuzz_corpus::edge_addrs(n),
                scope_len: scope,
            };
            for transport in [Transport::Udp, Transport::Tcp] {
                match respond(&bytes, RESOLVER, transport, &z, decide) {
                    Some(resp) => {
                        fuzz_corpus::check_response(&bytes, &resp, RESOLVER, transport, &z);
                        rcodes[usize::from(resp[3] & 0x0F)] += 1;
                        answered += usize::from(resp[6] != 0 || resp[7] != 0);
                        truncated += usize::from(resp[2] & 0x02 != 0);
                    }
                    None => assert!(
                        bytes.len() < 12 || bytes[2] & 0x80 != 0,
                        "dropped a request with a readable query header (seed {seed}, case {i})"
                    ),
                }
            }
        }
        println!("rcodes {rcodes:?}, with answers {answered}, truncated {truncated}");
        // The mutated valid messages must reach the deep paths, not only FORMERR (about
        // 5% answered, 7% NOERROR, 2% NXDOMAIN, 10% REFUSED, 0.15% truncated per case).
        if cases >= 10_000 {
            assert!(
                answered > cases / 20,
                "too few answered: the corpus is too broken"
            );
            assert!(rcodes[0] > cases / 10 && rcodes[1] > cases / 10);
            assert!(rcodes[3] > cases / 100 && rcodes[5] > cases / 100);
            assert!(truncated > 0);
        }
    }

    /// The `dns_request` fuzz target's corpus, replayed with the target's own checks.
    mod fuzz_corpus {
        use super::*;

        include!("../../../fuzz/invariants/dns_request.rs");
        include!("../../../fuzz/invariants/replay.rs");

        #[test]
        fn the_dns_request_fuzz_corpus_replays_without_panics() {
            replay_corpus("dns_request", check);
        }
    }
}
