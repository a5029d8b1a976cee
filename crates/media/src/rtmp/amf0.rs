//! AMF0, the encoding of RTMP commands and metadata.
//!
//! Decoding is bounded: nesting depth is capped so a hostile message cannot overflow the
//! stack, no allocation is sized from a count read off the wire, and the number of values
//! per message is capped so memory stays proportional to the bytes received.

use thiserror::Error;

const MAX_DEPTH: usize = 16;
/// Most values (nested ones included) one message may hold. Real commands and
/// `onMetaData` have tens; uncapped, a message of one-byte nulls would decode to 32 times
/// its size (an 8 MiB command: 256 MiB).
const MAX_VALUES: usize = 65_536;

#[derive(Debug, Clone, PartialEq)]
pub enum Amf0Value {
    Number(f64),
    Boolean(bool),
    String(String),
    Object(Vec<(String, Amf0Value)>),
    Null,
    Undefined,
    EcmaArray(Vec<(String, Amf0Value)>),
    StrictArray(Vec<Amf0Value>),
    Date(f64),
}

impl Amf0Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Amf0Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_number(&self) -> Option<f64> {
        match self {
            Amf0Value::Number(n) => Some(*n),
            Amf0Value::Boolean(b) => Some(f64::from(u8::from(*b))),
            _ => None,
        }
    }

    /// Properties of an object or ECMA array.
    pub fn properties(&self) -> Option<&[(String, Amf0Value)]> {
        match self {
            Amf0Value::Object(p) | Amf0Value::EcmaArray(p) => Some(p),
            _ => None,
        }
    }

    pub fn property(&self, name: &str) -> Option<&Amf0Value> {
        self.properties()?
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum Amf0Error {
    #[error("AMF0 value truncated")]
    Truncated,
    #[error("unsupported AMF0 type marker {0:#04x}")]
    UnsupportedMarker(u8),
    #[error("AMF0 values nested deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("AMF0 string is not UTF-8")]
    InvalidUtf8,
    #[error("more than {MAX_VALUES} AMF0 values in one message")]
    TooManyValues,
}

/// Decodes every value in `buf`.
pub fn decode_all(mut buf: &[u8]) -> Result<Vec<Amf0Value>, Amf0Error> {
    let mut values = Vec::new();
    let mut budget = MAX_VALUES;
    while !buf.is_empty() {
        values.push(decode_value(&mut buf, 0, &mut budget)?);
    }
    Ok(values)
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], Amf0Error> {
    if buf.len() < n {
        return Err(Amf0Error::Truncated);
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Ok(head)
}

fn read_u16(buf: &mut &[u8]) -> Result<u16, Amf0Error> {
    let b = take(buf, 2)?;
    Ok(u16::from_be_bytes([b[0], b[1]]))
}

fn read_u32(buf: &mut &[u8]) -> Result<u32, Amf0Error> {
    let b = take(buf, 4)?;
    Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn read_f64(buf: &mut &[u8]) -> Result<f64, Amf0Error> {
    let b = take(buf, 8)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Ok(f64::from_be_bytes(a))
}

fn read_string(buf: &mut &[u8], len: usize) -> Result<String, Amf0Error> {
    let b = take(buf, len)?;
    String::from_utf8(b.to_vec()).map_err(|_| Amf0Error::InvalidUtf8)
}

/// `budget`: how many more values the message may hold.
fn decode_value(buf: &mut &[u8], depth: usize, budget: &mut usize) -> Result<Amf0Value, Amf0Error> {
    if depth > MAX_DEPTH {
        return Err(Amf0Error::TooDeep);
    }
    *budget = budget.checked_sub(1).ok_or(Amf0Error::TooManyValues)?;
    let marker = take(buf, 1)?[0];
    Ok(match marker {
        0x00 => Amf0Value::Number(read_f64(buf)?),
        0x01 => Amf0Value::Boolean(take(buf, 1)?[0] != 0),
        0x02 => {
            let len = read_u16(buf)? as usize;
            Amf0Value::String(read_string(buf, len)?)
        }
        0x03 => Amf0Value::Object(decode_properties(buf, depth, budget)?),
        0x05 => Amf0Value::Null,
        0x06 => Amf0Value::Undefined,
        0x08 => {
            let _approximate_count = read_u32(buf)?;
            Amf0Value::EcmaArray(decode_properties(buf, depth, budget)?)
        }
        0x0A => {
            let count = read_u32(buf)?;
            let mut items = Vec::new();
            for _ in 0..count {
                items.push(decode_value(buf, depth + 1, budget)?);
            }
            Amf0Value::StrictArray(items)
        }
        0x0B => {
            let millis = read_f64(buf)?;
            take(buf, 2)?; // time zone, unused by the format
            Amf0Value::Date(millis)
        }
        0x0C => {
            let len = read_u32(buf)? as usize;
            Amf0Value::String(read_string(buf, len)?)
        }
        other => return Err(Amf0Error::UnsupportedMarker(other)),
    })
}

fn decode_properties(
    buf: &mut &[u8],
    depth: usize,
    budget: &mut usize,
) -> Result<Vec<(String, Amf0Value)>, Amf0Error> {
    let mut props = Vec::new();
    loop {
        let key_len = read_u16(buf)? as usize;
        if key_len == 0 {
            // An empty key is followed by the object-end marker; some encoders omit it at
            // the very end of a message.
            if buf.first() == Some(&0x09) {
                *buf = &buf[1..];
            }
            return Ok(props);
        }
        let key = read_string(buf, key_len)?;
        let value = decode_value(buf, depth + 1, budget)?;
        props.push((key, value));
    }
}

pub fn encode(value: &Amf0Value, out: &mut Vec<u8>) {
    match value {
        Amf0Value::Number(n) => {
            out.push(0x00);
            out.extend_from_slice(&n.to_be_bytes());
        }
        Amf0Value::Boolean(b) => out.extend_from_slice(&[0x01, u8::from(*b)]),
        Amf0Value::String(s) => {
            if let Ok(len) = u16::try_from(s.len()) {
                out.push(0x02);
                out.extend_from_slice(&len.to_be_bytes());
            } else {
                out.push(0x0C);
                out.extend_from_slice(&(s.len() as u32).to_be_bytes());
            }
            out.extend_from_slice(s.as_bytes());
        }
        Amf0Value::Object(props) => {
            out.push(0x03);
            encode_properties(props, out);
        }
        Amf0Value::Null => out.push(0x05),
        Amf0Value::Undefined => out.push(0x06),
        Amf0Value::EcmaArray(props) => {
            out.push(0x08);
            out.extend_from_slice(&(props.len() as u32).to_be_bytes());
            encode_properties(props, out);
        }
        Amf0Value::StrictArray(items) => {
            out.push(0x0A);
            out.extend_from_slice(&(items.len() as u32).to_be_bytes());
            for item in items {
                encode(item, out);
            }
        }
        Amf0Value::Date(millis) => {
            out.push(0x0B);
            out.extend_from_slice(&millis.to_be_bytes());
            out.extend_from_slice(&[0, 0]);
        }
    }
}

fn encode_properties(props: &[(String, Amf0Value)], out: &mut Vec<u8>) {
    for (key, value) in props {
        let key = &key.as_bytes()[..key.len().min(u16::MAX as usize)];
        out.extend_from_slice(&(key.len() as u16).to_be_bytes());
        out.extend_from_slice(key);
        encode(value, out);
    }
    out.extend_from_slice(&[0, 0, 0x09]);
}

/// Builds an object value from string keys, for terse command construction.
pub fn object(props: &[(&str, Amf0Value)]) -> Amf0Value {
    Amf0Value::Object(
        props
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_a_connect_command() {
        let values = vec![
            Amf0Value::String("connect".into()),
            Amf0Value::Number(1.0),
            object(&[
                ("app", Amf0Value::String("live".into())),
                ("fpad", Amf0Value::Boolean(false)),
                (
                    "fourCcList",
                    Amf0Value::StrictArray(vec![Amf0Value::String("hvc1".into())]),
                ),
            ]),
            Amf0Value::Null,
            Amf0Value::EcmaArray(vec![("width".into(), Amf0Value::Number(1280.0))]),
        ];
        let mut bytes = Vec::new();
        for v in &values {
            encode(v, &mut bytes);
        }
        assert_eq!(decode_all(&bytes).unwrap(), values);
    }

    #[test]
    fn deep_nesting_is_refused_not_recursed() {
        let mut bytes = Vec::new();
        for _ in 0..100_000 {
            bytes.extend_from_slice(&[0x03, 0x00, 0x01, b'a']);
        }
        assert_eq!(decode_all(&bytes), Err(Amf0Error::TooDeep));
    }

    #[test]
    fn a_message_of_countless_tiny_values_is_refused() {
        // 1 MiB of nulls would be a million values, 32 MiB decoded.
        assert_eq!(
            decode_all(&vec![0x05; 1 << 20]),
            Err(Amf0Error::TooManyValues)
        );
        let mut array = vec![0x0A, 0xFF, 0xFF, 0xFF, 0xFF];
        array.extend(std::iter::repeat_n(0x06, MAX_VALUES));
        assert_eq!(decode_all(&array), Err(Amf0Error::TooManyValues));
        assert_eq!(
            decode_all(&[0x05; MAX_VALUES]).map(|v| v.len()),
            Ok(MAX_VALUES)
        );
    }

    #[test]
    fn huge_strict_array_count_does_not_preallocate() {
        let bytes = [0x0A, 0xFF, 0xFF, 0xFF, 0xFF, 0x05];
        assert_eq!(decode_all(&bytes), Err(Amf0Error::Truncated));
    }
}
