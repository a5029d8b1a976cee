//! What the shell checks before srt-protocol sees a packet, and how a caller's
//! encryption meets its provider's (sans-IO).
//!
//! srt-protocol 0.4.4 (unmaintained since May 2024) panics on some inputs a caller
//! controls: a key length in the handshake that differs from the listener's, key
//! material sent to a listener without a passphrase, a KM extension that is not a
//! KMREQ (`unimplemented!` in `hsv5.rs`), and, on an open connection, a congestion
//! warning, a peer error or an SRT extension it does not know (`todo!`/`unimplemented!`
//! in `connection/mod.rs`). Every one of those is decided or dropped here first.

use srt_protocol::options::{KeySize, Passphrase};
use srt_protocol::packet::{
    ControlTypes, HandshakeVsInfo, KeyFlags, Packet, ShakeType, SrtControlPacket,
};
use srt_protocol::settings::KeySettings;

use crate::gate::Refusal;

/// What a caller's conclusion handshake says about its encryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallerCrypto {
    /// No key material: the caller does not encrypt.
    Clear,
    /// Key material wrapping keys of this many bytes.
    Encrypted(usize),
}

/// A packet for the listener (no connection yet for its sender).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ToListener {
    /// A conclusion handshake, with what it says about encryption.
    Conclusion(CallerCrypto),
    /// Anything else it may see.
    Other,
    /// Never handed over: it would panic srt-protocol.
    Drop,
}

pub(crate) fn to_listener(packet: &Packet) -> ToListener {
    let Packet::Control(control) = packet else {
        return ToListener::Other;
    };
    let ControlTypes::Handshake(shake) = &control.control_type else {
        return ToListener::Other;
    };
    let (ShakeType::Conclusion, HandshakeVsInfo::V5(info)) = (shake.shake_type, &shake.info) else {
        return ToListener::Other;
    };
    match &info.ext_km {
        None => ToListener::Conclusion(CallerCrypto::Clear),
        Some(SrtControlPacket::KeyRefreshRequest(km)) => {
            let keys = if km.key_flags == KeyFlags::EVEN | KeyFlags::ODD {
                2
            } else {
                1
            };
            // RFC 3394 key wrap adds 8 bytes to what it wraps.
            let length = km.wrapped_keys.len().saturating_sub(8) / keys;
            ToListener::Conclusion(CallerCrypto::Encrypted(length))
        }
        Some(_) => ToListener::Drop,
    }
}

/// Whether an open connection may be given `packet` (see the module's comment).
pub(crate) fn to_connection(packet: &Packet) -> bool {
    let Packet::Control(control) = packet else {
        return true;
    };
    match &control.control_type {
        ControlTypes::CongestionWarning | ControlTypes::PeerError(_) => false,
        ControlTypes::Srt(srt) => matches!(
            srt,
            SrtControlPacket::HandshakeRequest(_)
                | SrtControlPacket::HandshakeResponse(_)
                | SrtControlPacket::KeyRefreshRequest(_)
                | SrtControlPacket::KeyRefreshResponse(_)
        ),
        _ => true,
    }
}

/// The keys an admitted caller's connection decrypts with: none, or the provider's
/// passphrase at the caller's key length. `announced` is the key size the caller's
/// handshake states (0 when libsrt's `pbkeylen` is left to its default), which
/// srt-protocol requires the listener's to equal.
pub(crate) fn key_settings(
    announced: KeySize,
    caller: CallerCrypto,
    passphrase: Option<String>,
) -> Result<Option<KeySettings>, Refusal> {
    let Some(passphrase) = passphrase else {
        return match caller {
            CallerCrypto::Clear => Ok(None),
            // libsrt's listener answers an encrypting caller it has no passphrase for so.
            CallerCrypto::Encrypted(_) => Err(Refusal::Unsecure),
        };
    };
    let CallerCrypto::Encrypted(length) = caller else {
        return Err(Refusal::Unsecure);
    };
    // The key material must hold keys of the announced size (16 bytes when unstated).
    if announced.as_usize() != length {
        return Err(Refusal::BadSecret);
    }
    let passphrase = Passphrase::try_from(passphrase).map_err(|_| Refusal::Internal)?;
    Ok(Some(KeySettings {
        key_size: announced,
        passphrase,
    }))
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    #[test]
    fn encryption_must_match_the_providers() {
        let pass = || Some("a-passphrase-for-srt".to_owned());
        let clear = CallerCrypto::Clear;
        let aes = CallerCrypto::Encrypted;
        assert_eq!(key_settings(KeySize::Unspecified, clear, None), Ok(None));
        assert_eq!(
            key_settings(KeySize::Unspecified, aes(16), None),
            Err(Refusal::Unsecure)
        );
        assert_eq!(
            key_settings(KeySize::Unspecified, clear, pass()),
            Err(Refusal::Unsecure)
        );
        // libsrt's default pbkeylen: size 0 in the handshake, 16-byte keys.
        let keys = key_settings(KeySize::Unspecified, aes(16), pass())
            .unwrap()
            .unwrap();
        assert_eq!(keys.key_size, KeySize::Unspecified);
        let keys = key_settings(KeySize::AES256, aes(32), pass())
            .unwrap()
            .unwrap();
        assert_eq!(keys.key_size, KeySize::AES256);
        assert_eq!(
            key_settings(KeySize::AES128, aes(32), pass()),
            Err(Refusal::BadSecret)
        );
        assert_eq!(
            key_settings(KeySize::Unspecified, aes(24), pass()),
            Err(Refusal::BadSecret)
        );
    }

    #[test]
    fn packets_that_would_panic_the_protocol_are_dropped() {
        let parse = |bytes: &[u8]| Packet::parse(&mut Cursor::new(bytes), false).unwrap();
        // A control header: type in the first two bytes after the control bit.
        let control = |kind: u16, extra: &[u8]| {
            let mut bytes = vec![0x80 | (kind >> 8) as u8, kind as u8, 0, 0];
            bytes.extend_from_slice(&[0; 12]);
            bytes.extend_from_slice(extra);
            parse(&bytes)
        };
        assert!(!to_connection(&control(4, &[])), "congestion warning");
        assert!(!to_connection(&control(8, &[0, 0, 0, 1])), "peer error");
        assert!(to_connection(&control(1, &[])), "keep-alive");
        assert!(to_connection(&control(5, &[])), "shutdown");
        assert_eq!(to_listener(&control(1, &[])), ToListener::Other);
    }
}
