//! Every datagram or TCP message the router's DNS port receives goes through
//! `streamcdn_router::dns::respond`: it must never panic, must answer every readable query
//! header with the same id, must fit the transport (1232 bytes over UDP), and what it sends
//! must itself be dropped if it came back as a request (QR=1). The first byte picks what the
//! decision returns (how many edges, which scope), the rest is the request.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use streamcdn_router::dns::{respond, Answer, Query, Transport, Zone};

fuzz_target!(|data: &[u8]| {
    let Some((&knob, request)) = data.split_first() else {
        return;
    };
    let zone = Zone::new(
        "streamcdn.test",
        "live.streamcdn.test",
        &[
            (
                "ns1.streamcdn.test",
                vec![
                    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 53)),
                    IpAddr::V6(Ipv6Addr::LOCALHOST),
                ],
            ),
            ("ns.elsewhere.example", vec![]),
        ],
    )
    .expect("a valid zone");
    let edges = usize::from(knob & 0x7F);
    let decide = |q: &Query<'_>| {
        if let Some((addr, source)) = q.ecs {
            assert!(source > 0 && source <= if addr.is_ipv4() { 32 } else { 128 });
        }
        Answer {
            addrs: (0..edges)
                .map(|k| {
                    if k % 3 == 0 {
                        IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, k as u16))
                    } else {
                        IpAddr::V4(Ipv4Addr::new(127, 0, 3, k as u8))
                    }
                })
                .collect(),
            scope_len: knob.rotate_left(3),
        }
    };
    let client = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));
    for (transport, limit) in [(Transport::Udp, 1232), (Transport::Tcp, 65535)] {
        match respond(request, client, transport, &zone, decide) {
            Some(resp) => {
                assert!(resp.len() >= 12 && resp.len() <= limit);
                assert_eq!(resp[..2], request[..2]);
                assert_eq!(resp[2] & 0x80, 0x80, "QR set");
                assert_eq!(resp[3] & 0x80, 0, "RA never set");
                assert_eq!(respond(&resp, client, transport, &zone, decide), None);
            }
            None => assert!(request.len() < 12 || request[2] & 0x80 != 0),
        }
    }
});
