//! DNS responses counted by query type and result, read from the request's and the
//! response's bytes: `streamcdn_router_dns_responses_total{qtype, rcode}` and
//! `streamcdn_router_dns_truncated_total{qtype}`. The counter handles are registered once;
//! counting a response is two header reads and an atomic add.

/// Query types counted by name (A, AAAA, SOA, NS, ANY); everything else is `other`.
const QTYPES: [u16; 5] = [1, 28, 6, 2, 255];
const QTYPE_LABELS: [&str; 6] = ["A", "AAAA", "SOA", "NS", "ANY", "other"];
const OTHER_QTYPE: usize = QTYPES.len();

/// The `rcode` label: the response code, with NOERROR split into answers and NODATA (no
/// answer records), and BADVERS (extended code 16, RFC 6891). In the order of [`RCODES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rcode {
    NoError,
    NoData,
    NxDomain,
    Refused,
    FormErr,
    ServFail,
    NotImp,
    BadVers,
    Other,
}

const RCODES: [Rcode; 9] = [
    Rcode::NoError,
    Rcode::NoData,
    Rcode::NxDomain,
    Rcode::Refused,
    Rcode::FormErr,
    Rcode::ServFail,
    Rcode::NotImp,
    Rcode::BadVers,
    Rcode::Other,
];

impl Rcode {
    fn as_str(self) -> &'static str {
        match self {
            Rcode::NoError => "NOERROR",
            Rcode::NoData => "NODATA",
            Rcode::NxDomain => "NXDOMAIN",
            Rcode::Refused => "REFUSED",
            Rcode::FormErr => "FORMERR",
            Rcode::ServFail => "SERVFAIL",
            Rcode::NotImp => "NOTIMP",
            Rcode::BadVers => "BADVERS",
            Rcode::Other => "other",
        }
    }
}

fn u16_at(msg: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*msg.get(at)?, *msg.get(at + 1)?]))
}

/// The offset just past the first question's name, which starts at byte 12 and, being
/// the first name of the message, cannot be compressed.
fn after_first_name(msg: &[u8]) -> Option<usize> {
    let mut pos = 12;
    loop {
        match *msg.get(pos)? {
            0 => return Some(pos + 1),
            len if len < 0x40 => pos += 1 + usize::from(len),
            _ => return None,
        }
    }
}

fn qtype(request: &[u8]) -> Option<u16> {
    if u16_at(request, 4)? == 0 {
        return None;
    }
    u16_at(request, after_first_name(request)?)
}

fn qtype_index(request: &[u8]) -> usize {
    qtype(request)
        .and_then(|t| QTYPES.iter().position(|code| *code == t))
        .unwrap_or(OTHER_QTYPE)
}

/// The extended response code bits from the OPT record of a response whose answer and
/// authority sections are empty (where BADVERS can occur), 0 if there is none.
fn extended_rcode(response: &[u8]) -> u8 {
    let mut pos = 12;
    if u16_at(response, 4).is_some_and(|qd| qd > 0) {
        match after_first_name(response) {
            Some(end) => pos = end + 4,
            None => return 0,
        }
    }
    // The OPT's owner is the root (one zero byte); its TTL starts with the extended code.
    match (response.get(pos), u16_at(response, pos + 1)) {
        (Some(0), Some(41)) => response.get(pos + 5).copied().unwrap_or(0),
        _ => 0,
    }
}

/// The truncation bit in the header's flags.
const TC: u16 = 0x0200;

fn flags(response: &[u8]) -> u16 {
    u16_at(response, 2).unwrap_or(0)
}

fn rcode(response: &[u8]) -> Rcode {
    let truncated = flags(response) & TC != 0;
    let answers = u16_at(response, 6).unwrap_or(0);
    let authorities = u16_at(response, 8).unwrap_or(0);
    match flags(response) & 0x000F {
        0 if answers == 0 && authorities == 0 && !truncated && extended_rcode(response) == 1 => {
            Rcode::BadVers
        }
        0 if answers == 0 && !truncated => Rcode::NoData,
        0 => Rcode::NoError,
        1 => Rcode::FormErr,
        2 => Rcode::ServFail,
        3 => Rcode::NxDomain,
        4 => Rcode::NotImp,
        5 => Rcode::Refused,
        _ => Rcode::Other,
    }
}

/// The counter handles, one per query type and result.
pub struct ResponseCounters {
    by_kind: Vec<metrics::Counter>,
    truncated: Vec<metrics::Counter>,
}

impl ResponseCounters {
    pub fn new() -> Self {
        let mut by_kind = Vec::with_capacity(QTYPE_LABELS.len() * RCODES.len());
        for qtype in QTYPE_LABELS {
            for rcode in RCODES {
                by_kind.push(metrics::counter!(
                    "streamcdn_router_dns_responses_total",
                    "qtype" => qtype,
                    "rcode" => rcode.as_str()
                ));
            }
        }
        let truncated = QTYPE_LABELS
            .iter()
            .map(|qtype| metrics::counter!("streamcdn_router_dns_truncated_total", "qtype" => *qtype))
            .collect();
        Self { by_kind, truncated }
    }

    pub fn count(&self, request: &[u8], response: &[u8]) {
        let (kind, truncated) = classify(request, response);
        if let Some(counter) = self.by_kind.get(kind) {
            counter.increment(1);
        }
        if let Some(counter) = truncated.and_then(|qtype| self.truncated.get(qtype)) {
            counter.increment(1);
        }
    }

    /// Adds what a thread counted locally (see [`Tally`]) and zeroes it.
    pub fn add(&self, tally: &mut Tally) {
        for (counter, n) in self.by_kind.iter().zip(&mut tally.by_kind) {
            if *n > 0 {
                counter.increment(std::mem::take(n));
            }
        }
        for (counter, n) in self.truncated.iter().zip(&mut tally.truncated) {
            if *n > 0 {
                counter.increment(std::mem::take(n));
            }
        }
    }
}

/// The index of the response's (qtype, rcode) counter, and its qtype if truncated.
fn classify(request: &[u8], response: &[u8]) -> (usize, Option<usize>) {
    let qtype = qtype_index(request);
    let truncated = (flags(response) & TC != 0).then_some(qtype);
    (qtype * RCODES.len() + rcode(response) as usize, truncated)
}

/// Responses counted by one thread and added to the shared counters once per batch: an
/// atomic add per response on counters every thread shares costs more than the rest of
/// answering a repeated query.
#[derive(Debug)]
pub struct Tally {
    by_kind: [u64; QTYPE_LABELS.len() * RCODES.len()],
    truncated: [u64; QTYPE_LABELS.len()],
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            by_kind: [0; QTYPE_LABELS.len() * RCODES.len()],
            truncated: [0; QTYPE_LABELS.len()],
        }
    }
}

impl Tally {
    pub fn count(&mut self, request: &[u8], response: &[u8]) {
        let (kind, truncated) = classify(request, response);
        if let Some(n) = self.by_kind.get_mut(kind) {
            *n += 1;
        }
        if let Some(n) = truncated.and_then(|qtype| self.truncated.get_mut(qtype)) {
            *n += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::IpAddr;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    use hickory_proto::op::{Edns, Message, OpCode, Query};
    use hickory_proto::rr::{Name, RecordType};
    use metrics::{
        Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
    };

    use super::*;
    use streamcdn_routing::dns::{self, Answer, Transport, Zone};

    /// Hands out counters it can read back, by name and labels.
    #[derive(Default)]
    struct Counters(Mutex<HashMap<String, Arc<AtomicU64>>>);

    impl Counters {
        fn get(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
            let key = Key::from_parts(
                name.to_owned(),
                labels
                    .iter()
                    .map(|(k, v)| metrics::Label::new(k.to_string(), v.to_string()))
                    .collect::<Vec<_>>(),
            );
            let counters = self.0.lock().unwrap();
            counters
                .get(&format!("{key}"))
                .map_or(0, |c| c.load(Ordering::Relaxed))
        }
    }

    impl Recorder for Counters {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            let mut counters = self.0.lock().unwrap();
            Counter::from_arc(counters.entry(format!("{key}")).or_default().clone())
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    fn request(qname: &str, qtype: RecordType, edns_version: Option<u8>) -> Vec<u8> {
        let mut msg = Message::query();
        msg.add_query(Query::query(Name::from_ascii(qname).unwrap(), qtype));
        if let Some(version) = edns_version {
            let mut edns = Edns::new();
            edns.set_version(version);
            msg.set_edns(edns);
        }
        msg.to_vec().unwrap()
    }

    #[test]
    fn responses_are_counted_by_qtype_and_result() {
        let zone = Zone::new(
            "streamcdn.test",
            "live.streamcdn.test",
            &[("ns1.streamcdn.test", vec!["127.0.0.1".parse().unwrap()])],
        )
        .unwrap();
        // Three edge addresses: an A answer without EDNS does not fit in 512 bytes then.
        let many: Vec<IpAddr> = (0..40).map(|i| IpAddr::from([10, 0, 0, i])).collect();
        let recorder = Counters::default();
        let counters = metrics::with_local_recorder(&recorder, ResponseCounters::new);
        let mut notimp = Message::query();
        notimp.metadata.op_code = OpCode::Update;
        notimp.add_query(Query::query(
            Name::from_ascii("streamcdn.test").unwrap(),
            RecordType::SOA,
        ));
        let mut garbage = request("streamcdn.test", RecordType::SOA, None);
        garbage.truncate(14);
        let queries = [
            (
                request("live.streamcdn.test", RecordType::A, Some(0)),
                vec![],
            ),
            (
                request("live.streamcdn.test", RecordType::A, Some(0)),
                vec![],
            ),
            (
                request("live.streamcdn.test", RecordType::AAAA, None),
                vec![],
            ),
            (request("streamcdn.test", RecordType::SOA, None), vec![]),
            (request("streamcdn.test", RecordType::NS, None), vec![]),
            (request("streamcdn.test", RecordType::ANY, None), vec![]),
            (request("nx.streamcdn.test", RecordType::A, None), vec![]),
            (request("example.com", RecordType::MX, None), vec![]),
            (request("streamcdn.test", RecordType::SOA, Some(1)), vec![]),
            (notimp.to_vec().unwrap(), vec![]),
            (garbage, vec![]),
            (request("live.streamcdn.test", RecordType::A, None), many),
        ];
        // Half counted at once, half through a thread's tally added afterwards (twice:
        // adding empties it): the totals are the same.
        let mut tally = Tally::default();
        for (i, (query, addrs)) in queries.iter().enumerate() {
            let addrs = if addrs.is_empty() {
                vec!["127.0.0.5".parse().unwrap()]
            } else {
                addrs.clone()
            };
            let response = dns::respond(
                query,
                IpAddr::from([127, 0, 0, 1]),
                Transport::Udp,
                &zone,
                |_| Answer {
                    addrs: addrs.clone(),
                    scope_len: 0,
                },
            )
            .unwrap();
            if i % 2 == 0 {
                counters.count(query, &response);
            } else {
                tally.count(query, &response);
            }
        }
        counters.add(&mut tally);
        counters.add(&mut tally);
        let responses = |qtype, rcode| {
            recorder.get(
                "streamcdn_router_dns_responses_total",
                &[("qtype", qtype), ("rcode", rcode)],
            )
        };
        assert_eq!(
            responses("A", "NOERROR"),
            3,
            "two answers and a truncated one"
        );
        assert_eq!(responses("AAAA", "NODATA"), 1, "no IPv6 edge");
        assert_eq!(responses("SOA", "NOERROR"), 1);
        assert_eq!(responses("NS", "NOERROR"), 1);
        assert_eq!(responses("ANY", "NOERROR"), 1);
        assert_eq!(responses("A", "NXDOMAIN"), 1);
        assert_eq!(responses("other", "REFUSED"), 1);
        assert_eq!(responses("SOA", "BADVERS"), 1);
        assert_eq!(responses("SOA", "NOTIMP"), 1);
        assert_eq!(responses("other", "FORMERR"), 1, "no readable question");
        assert_eq!(
            recorder.get("streamcdn_router_dns_truncated_total", &[("qtype", "A")]),
            1
        );
        let total: u64 = QTYPE_LABELS
            .iter()
            .flat_map(|q| RCODES.map(|r| responses(q, r.as_str())))
            .sum();
        assert_eq!(total, queries.len() as u64);
    }
}
