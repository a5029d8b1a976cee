/// Every datagram or TCP message the router's DNS port receives goes through `respond`: it
/// must never panic, must answer every readable query header (see `check_response`), and
/// drops only what has no readable header or is itself a response. The first byte picks
/// what the decision returns (how many edges, which scope), the rest is the request.
/// Needs `respond`, `Answer`, `Query`, `Transport`, `Zone`, hickory's `Message` and
/// `IpAddr`, `Ipv4Addr`, `Ipv6Addr` in scope.
pub fn check(data: &[u8]) {
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
    let decide = |q: &Query<'_>| {
        if let Some((addr, source)) = q.ecs {
            assert!(source > 0 && source <= if addr.is_ipv4() { 32 } else { 128 });
        }
        Answer {
            addrs: edge_addrs(usize::from(knob & 0x7F)),
            scope_len: knob.rotate_left(3),
        }
    };
    let client = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));
    for transport in [Transport::Udp, Transport::Tcp] {
        match respond(request, client, transport, &zone, decide) {
            Some(resp) => check_response(request, &resp, client, transport, &zone),
            None => assert!(request.len() < 12 || request[2] & 0x80 != 0),
        }
    }
}

/// What every response must be: the request's id, QR set, RA clear, within the transport's
/// limit (1232 bytes over UDP), a message hickory can parse, and dropped if it came back
/// as a request.
pub fn check_response(
    request: &[u8],
    resp: &[u8],
    client: IpAddr,
    transport: Transport,
    zone: &Zone,
) {
    let limit = match transport {
        Transport::Udp => 1232,
        Transport::Tcp => 65535,
    };
    assert!(resp.len() >= 12 && resp.len() <= limit, "{} bytes", resp.len());
    assert_eq!(resp[..2], request[..2], "id echoed");
    assert_eq!(resp[2] & 0x80, 0x80, "QR set");
    assert_eq!(resp[3] & 0x80, 0, "RA never set");
    if let Err(e) = Message::from_vec(resp) {
        panic!("our response does not parse: {e}: {resp:02x?} for {request:02x?}");
    }
    let fed_back = respond(resp, client, transport, zone, |_| Answer::default());
    assert_eq!(fed_back, None, "a response fed back in is dropped");
}

/// `n` edge addresses, every third IPv6 (so both A and AAAA answers can be large).
pub fn edge_addrs(n: usize) -> Vec<IpAddr> {
    (0..n)
        .map(|k| {
            if k % 3 == 0 {
                IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, k as u16))
            } else {
                IpAddr::V4(Ipv4Addr::new(127, 0, 3, k as u8))
            }
        })
        .collect()
}
