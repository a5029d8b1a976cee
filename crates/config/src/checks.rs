//! Checks that several sections share. A failed check is an [`Invalid`]: the dotted key
//! and why, which `Config::parse` turns into an error naming the file, line and column.

/// The offending key (dotted, as `providers[1].hooks.timeout`) and what is wrong with it.
pub(crate) type Invalid = (String, String);

/// `url` is an `http://` URL with something after the scheme.
pub(crate) fn http_url(key: &str, url: &str) -> Result<(), Invalid> {
    if url.starts_with("http://") && url.len() > 7 {
        Ok(())
    } else {
        Err((key.to_owned(), format!("{url:?} is not an http:// URL")))
    }
}

/// A name used in registry keys (a cluster, node, site or namespace).
pub(crate) fn registry_name(key: &str, name: &str) -> Result<(), Invalid> {
    if name.is_empty()
        || name.len() > 128
        || !name.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
    {
        return Err((
            key.into(),
            format!("{name:?} must be 1-128 printable characters without /"),
        ));
    }
    Ok(())
}

/// A DNS host name: labels of 1-63 letters, digits and hyphens, 253 characters at most.
pub(crate) fn is_host_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// `address/length` with the length in range for the family.
pub(crate) fn is_cidr(text: &str) -> bool {
    let Some((addr, len)) = text.split_once('/') else {
        return false;
    };
    match (addr.parse::<std::net::IpAddr>(), len.parse::<u8>()) {
        (Ok(std::net::IpAddr::V4(_)), Ok(len)) => len <= 32,
        (Ok(std::net::IpAddr::V6(_)), Ok(len)) => len <= 128,
        _ => false,
    }
}
