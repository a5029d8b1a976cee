/// CI/T bodies (RFC 8007): commands from peers (`parse_command`) and from our operator
/// (`parse_operator_command`), and the Trigger Status Resources and Collections a dCDN
/// answers (`parse_status`, `parse_collection`); PatternMatch and CDN PIDs over the text.
/// The first byte picks the `Content-Type` (bits 0-2: the right one spelled three ways,
/// another `ptype`, `application/json`, none, or the input's first line, the body being
/// the rest), the receiver's PID (bit 5: `AS64496:0` or the RFC examples' `AS64496:1`)
/// and the flags of the pattern made of the text (bits 3-4); the rest is the body, and
/// for the pattern its first line, matched against the second.
///
/// Nothing panics; a refusal is a 4xx, 415 exactly when the media type is wrong; what a
/// peer may send our operator may too; an accepted object written back parses to
/// itself; a command we cascade comes back to us as a loop; an invalid pattern matches
/// nothing, a literal pattern matches its own text, `*` what the RFC says, what a
/// pattern naming a host literally matches is on that host, and a pattern
/// is matched against 4 KiB subjects (libFuzzer's `-timeout` catches super-linear
/// work); a PID parses exactly when it is `AS<u32>:<u32>` and displays back to itself.
/// Needs `parse_command`, `parse_operator_command`, `parse_status`, `parse_collection`,
/// `Action`, `CdnPid`, `PatternMatch`, `TriggerSpec`, `WireError`, `MAX_CDN_PATH` (from
/// `wire`) and `host_of` (from `pattern`) in scope.
pub fn check(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let receiver = CdnPid {
        asn: 64496,
        qualifier: u32::from((mode >> 5) & 1),
    };
    let (line, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(at) if mode & 7 == 6 => (std::str::from_utf8(&rest[..at]).ok(), &rest[at + 1..]),
        _ => (None, rest),
    };
    let mut patterns = Vec::new();
    let mut urls = Vec::new();

    // Commands, from a peer and from our operator.
    let (header, media_ok) = cdni_content_type(mode, "ci-trigger-command", line);
    let from_peer = parse_command(header.as_deref(), body, receiver);
    let from_operator = parse_operator_command(header.as_deref(), body);
    let command_type = Some("application/cdni; ptype=ci-trigger-command");
    match &from_peer {
        Ok(command) => {
            assert_ne!(media_ok, Some(false), "accepted with the wrong media type");
            assert_eq!(
                from_operator.as_ref(),
                Ok(command),
                "what a peer may send, we may"
            );
            let path = command.envelope.cdn_path.pids();
            assert!(!path.is_empty() && path.len() <= MAX_CDN_PATH);
            assert!(!path.contains(&receiver), "a loop was let through");
            let json = command.to_json();
            assert_eq!(
                parse_command(command_type, &json, receiver).as_ref(),
                Ok(command),
                "written back as {}",
                String::from_utf8_lossy(&json)
            );
            let cascaded = command.cascaded_by(receiver);
            let json = cascaded.to_json();
            match parse_command(command_type, &json, receiver) {
                Err(WireError::Loop(pid)) => assert_eq!(pid, receiver),
                Err(e) if path.len() == MAX_CDN_PATH => assert_eq!(e.http_status(), 400),
                other => panic!("our own cascade came back as {other:?}"),
            }
            if path.len() < MAX_CDN_PATH {
                assert_eq!(parse_operator_command(command_type, &json), Ok(cascaded));
            }
        }
        Err(e) => {
            cdni_check_error(e, media_ok);
            if let (WireError::Loop(pid), Ok(command)) = (e, &from_operator) {
                assert_eq!(*pid, receiver);
                assert!(command.envelope.cdn_path.contains(&receiver));
            }
        }
    }
    match &from_operator {
        Ok(command) => {
            assert_ne!(media_ok, Some(false), "accepted with the wrong media type");
            let json = command.to_json();
            assert_eq!(
                parse_operator_command(command_type, &json).as_ref(),
                Ok(command),
                "written back as {}",
                String::from_utf8_lossy(&json)
            );
            if let Action::Trigger(spec) = &command.action {
                cdni_references(spec, &mut patterns, &mut urls);
            } else if let Action::Cancel(cancel) = &command.action {
                assert!(!cancel.is_empty());
                urls.extend(cancel.iter().take(16).cloned());
            }
        }
        Err(e) => {
            cdni_check_error(e, media_ok);
            assert!(from_peer.is_err(), "what a peer may send, we may");
        }
    }

    // A dCDN's answers, as the uCDN side polls them.
    let (header, media_ok) = cdni_content_type(mode, "ci-trigger-status", line);
    match parse_status(header.as_deref(), body) {
        Ok(status) => {
            assert_ne!(media_ok, Some(false), "accepted with the wrong media type");
            let json = status.to_json();
            assert_eq!(
                parse_status(Some("application/cdni; ptype=ci-trigger-status"), &json).as_ref(),
                Ok(&status),
                "written back as {}",
                String::from_utf8_lossy(&json)
            );
            cdni_references(&status.trigger, &mut patterns, &mut urls);
        }
        Err(e) => cdni_check_error(&e, media_ok),
    }
    let (header, media_ok) = cdni_content_type(mode, "ci-trigger-collection", line);
    match parse_collection(header.as_deref(), body) {
        Ok(collection) => {
            assert_ne!(media_ok, Some(false), "accepted with the wrong media type");
            let json = collection.to_json();
            assert_eq!(
                parse_collection(Some("application/cdni; ptype=ci-trigger-collection"), &json)
                    .as_ref(),
                Ok(&collection),
                "written back as {}",
                String::from_utf8_lossy(&json)
            );
        }
        Err(e) => cdni_check_error(&e, media_ok),
    }

    // Patterns and PIDs, from the text itself.
    let text = String::from_utf8_lossy(rest);
    let (pattern, subject) = text.split_once('\n').unwrap_or((&text, &text));
    patterns.insert(
        0,
        PatternMatch {
            pattern: pattern.to_owned(),
            case_sensitive: mode & 8 != 0,
            match_query_string: mode & 16 != 0,
        },
    );
    urls.insert(0, subject.to_owned());
    for (i, pattern) in patterns.iter().enumerate() {
        cdni_check_pattern(pattern, &urls, i < 2);
    }
    for url in &urls {
        cdni_check_literal(url, mode & 8 != 0);
    }
    for candidate in text.split('\n').take(64) {
        cdni_check_pid(candidate);
    }
}

/// The `Content-Type` a body of `ptype` is sent with, and whether it is the right one
/// (unknown when it is the input's own first line).
fn cdni_content_type(mode: u8, ptype: &str, line: Option<&str>) -> (Option<String>, Option<bool>) {
    match mode & 7 {
        1 => (
            Some(format!("Application/CDNI ;PTYPE=\"{ptype}\"")),
            Some(true),
        ),
        2 => (
            Some(format!("application/cdni; charset=utf-8; ptype={ptype}")),
            Some(true),
        ),
        3 => {
            let other = if ptype == "ci-trigger-status" {
                "ci-trigger-command"
            } else {
                "ci-trigger-status"
            };
            (
                Some(format!("application/cdni; ptype={other}")),
                Some(false),
            )
        }
        4 => (Some("application/json".to_owned()), Some(false)),
        5 => (None, Some(false)),
        6 => (line.map(str::to_owned), line.is_none().then_some(false)),
        _ => (Some(format!("application/cdni; ptype={ptype}")), Some(true)),
    }
}

fn cdni_check_error(error: &WireError, media_ok: Option<bool>) {
    let status = error.http_status();
    assert!((400..=499).contains(&status), "{error}: {status}");
    assert_eq!(
        status == 415,
        matches!(error, WireError::MediaType(_)),
        "{error}"
    );
    match media_ok {
        Some(true) => assert_ne!(status, 415, "refused the right media type: {error}"),
        Some(false) => assert_eq!(status, 415, "took the wrong media type: {error}"),
        None => {}
    }
    assert!(!error.to_string().is_empty());
}

fn cdni_references(spec: &TriggerSpec, patterns: &mut Vec<PatternMatch>, urls: &mut Vec<String>) {
    let refs = &spec.references;
    for list in [&refs.metadata_patterns, &refs.content_patterns] {
        patterns.extend(list.iter().flatten().take(16).cloned());
    }
    for list in [&refs.metadata_urls, &refs.content_urls] {
        urls.extend(list.iter().flatten().take(16).cloned());
    }
}

/// RFC 3986 `pchar`, a byte at a time, and `/`: what `*` may match (§5.2.4).
fn cdni_star_matches(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=:@/".contains(&b)
}

/// `long`: also against 4 KiB subjects (for the first few patterns of an input).
fn cdni_check_pattern(pattern: &PatternMatch, urls: &[String], long: bool) {
    // Valid: not empty, and every `$` escapes `$`, `*` or `?`.
    let mut escapes = true;
    let mut bytes = pattern.pattern.bytes();
    while let Some(b) = bytes.next() {
        if b == b'$' && !matches!(bytes.next(), Some(b'$' | b'*' | b'?')) {
            escapes = false;
        }
    }
    let valid = pattern.validate().is_ok();
    assert_eq!(
        valid,
        !pattern.pattern.is_empty() && escapes,
        "{:?}",
        pattern.pattern
    );
    let written = serde_json::to_vec(pattern).expect("a pattern serializes");
    assert_eq!(
        serde_json::from_slice::<PatternMatch>(&written)
            .ok()
            .as_ref(),
        Some(pattern)
    );
    // Who may send it is decided by the host it names (`configuration`): what it
    // matches is on that host.
    let host = pattern.literal_host();
    if let Some(authority) = pattern.literal_authority() {
        assert!(pattern.pattern.contains(authority));
    }
    for url in urls.iter().take(8) {
        let matched = pattern.matches(url);
        assert!(valid || !matched, "an invalid pattern matched {url:?}");
        if matched && host.is_some() {
            assert_eq!(host_of(url), host, "{:?} matched {url:?}", pattern.pattern);
        }
    }
    if !long {
        return;
    }
    // 4 KiB subjects: the pattern's literal bytes over and over (`*a*a*a*b` against
    // `aaaa…`), and the first URL over and over.
    let literal: Vec<u8> = pattern
        .pattern
        .bytes()
        .filter(|b| !b"$*?".contains(b))
        .collect();
    let mut subjects = vec![cdni_repeat(&literal, 4096)];
    subjects.extend(urls.first().map(|url| cdni_repeat(url.as_bytes(), 4096)));
    for subject in &subjects {
        let matched = pattern.matches(&String::from_utf8_lossy(subject));
        assert!(valid || !matched, "an invalid pattern matched");
    }
}

/// `bytes` repeated up to `len` (cut on a byte, so maybe not UTF-8 at the end).
fn cdni_repeat(bytes: &[u8], len: usize) -> Vec<u8> {
    if bytes.is_empty() {
        return vec![b'a'; len];
    }
    let mut repeated = bytes.repeat(len.div_ceil(bytes.len()));
    repeated.truncate(len);
    repeated
}

/// A URL matches the pattern that is its own text, escaped; `*` matches exactly the URLs
/// made of `pchar` and `/` (up to the query, unless `match-query-string`).
fn cdni_check_literal(url: &str, case_sensitive: bool) {
    if url.is_empty() {
        return;
    }
    let mut escaped = String::with_capacity(url.len() * 2);
    for c in url.chars() {
        if matches!(c, '$' | '*' | '?') {
            escaped.push('$');
        }
        escaped.push(c);
    }
    let literal = PatternMatch {
        pattern: escaped,
        case_sensitive,
        match_query_string: true,
    };
    assert!(
        literal.matches(url),
        "{:?} does not match itself",
        literal.pattern
    );
    if let Some(host) = literal.literal_host() {
        assert_eq!(host_of(url), Some(host), "{:?}", literal.pattern);
    }
    for match_query_string in [false, true] {
        let star = PatternMatch {
            pattern: "*".to_owned(),
            case_sensitive,
            match_query_string,
        };
        let compared = if match_query_string {
            url
        } else {
            url.split_once('?').map_or(url, |(before, _)| before)
        };
        assert_eq!(
            star.matches(url),
            compared.bytes().all(cdni_star_matches),
            "\"*\" against {url:?} (match-query-string {match_query_string})"
        );
    }
}

/// `AS<digits>:<digits>`, both below 2^32 (leading zeros allowed), and nothing else.
fn cdni_check_pid(text: &str) {
    let number = |part: &str| -> Option<u32> {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let significant = part.trim_start_matches('0');
        if significant.len() > 10 {
            return None;
        }
        u32::try_from(
            significant
                .bytes()
                .fold(0u64, |n, b| n * 10 + u64::from(b - b'0')),
        )
        .ok()
    };
    let expected = text
        .strip_prefix("AS")
        .and_then(|rest| rest.split_once(':'))
        .and_then(|(asn, qualifier)| Some((number(asn)?, number(qualifier)?)));
    let parsed = text.parse::<CdnPid>();
    assert_eq!(
        parsed.as_ref().ok().map(|pid| (pid.asn, pid.qualifier)),
        expected,
        "{text:?} parsed as {parsed:?}"
    );
    let from_json = serde_json::from_value::<CdnPid>(serde_json::Value::String(text.to_owned()));
    assert_eq!(from_json.ok(), parsed.as_ref().ok().copied());
    if let Ok(pid) = parsed {
        let shown = pid.to_string();
        assert_eq!(
            shown.parse::<CdnPid>(),
            Ok(pid),
            "{text:?} shown as {shown:?}"
        );
        assert_eq!(
            shown,
            format!("AS{}:{}", expected.unwrap().0, expected.unwrap().1)
        );
    }
}
