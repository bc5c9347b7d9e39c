//! On-disk formats of the embedded engine: the binary encoding of items and the
//! order-preserving encoding of keys.
//!
//! **Items** are stored in a small tagged binary format (version byte `1`, then the
//! attributes sorted by name; every value carries a one-byte type tag, lengths are LEB128
//! varints). It is our own format on purpose: `AttributeValue`'s serde impl is not a
//! tagged round trip, and a format we own cannot change under us with a dependency bump.
//!
//! **Keys** are byte strings whose byte-wise order is the order of the tuple of their
//! parts (each part a string compared by bytes, as DynamoDB compares keys). A part is
//! its UTF-8 bytes with `0x00` escaped as `0x00 0xFF`, followed by the terminator
//! `0x00 0x01`. So `part(a) ++ part(b)` sorts exactly like `(a, b)`, every key of a
//! partition starts with `part(pk)`, and every key whose part starts with a string `q`
//! starts with `escape(q)`.

use std::collections::HashMap;

use crate::ports::store::{Item, StoreError, StoreResult, Value};

const FORMAT_VERSION: u8 = 1;

const T_S: u8 = 0;
const T_N: u8 = 1;
const T_B: u8 = 2;
const T_BOOL: u8 = 3;
const T_NULL: u8 = 4;
const T_M: u8 = 5;
const T_L: u8 = 6;
const T_SS: u8 = 7;
const T_NS: u8 = 8;
const T_BS: u8 = 9;

/// Encodes an item (attributes sorted by name, so equal items give equal bytes).
pub fn encode_item(item: &Item) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.push(FORMAT_VERSION);
    encode_map(&mut out, item);
    out
}

/// Decodes an item written by [`encode_item`].
pub(crate) fn decode_item(bytes: &[u8]) -> StoreResult<Item> {
    let mut r = Reader { bytes, pos: 0 };
    let version = r.byte()?;
    if version != FORMAT_VERSION {
        return Err(corrupt("unknown item format version"));
    }
    let item = r.map()?;
    if r.pos != bytes.len() {
        return Err(corrupt("trailing bytes after item"));
    }
    Ok(item)
}

fn encode_map(out: &mut Vec<u8>, map: &HashMap<String, Value>) {
    let mut attrs: Vec<(&String, &Value)> = map.iter().collect();
    attrs.sort_unstable_by(|a, b| a.0.cmp(b.0));
    put_len(out, attrs.len());
    for (name, v) in attrs {
        put_bytes(out, name.as_bytes());
        encode_value(out, v);
    }
}

fn encode_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::S(s) => {
            out.push(T_S);
            put_bytes(out, s.as_bytes());
        }
        Value::N(n) => {
            out.push(T_N);
            put_bytes(out, n.as_bytes());
        }
        Value::B(b) => {
            out.push(T_B);
            put_bytes(out, b);
        }
        Value::Bool(b) => {
            out.push(T_BOOL);
            out.push(u8::from(*b));
        }
        Value::Null(b) => {
            out.push(T_NULL);
            out.push(u8::from(*b));
        }
        Value::M(m) => {
            out.push(T_M);
            encode_map(out, m);
        }
        Value::L(l) => {
            out.push(T_L);
            put_len(out, l.len());
            for v in l {
                encode_value(out, v);
            }
        }
        Value::Ss(ss) => {
            out.push(T_SS);
            put_len(out, ss.len());
            for s in ss {
                put_bytes(out, s.as_bytes());
            }
        }
        Value::Ns(ns) => {
            out.push(T_NS);
            put_len(out, ns.len());
            for n in ns {
                put_bytes(out, n.as_bytes());
            }
        }
        Value::Bs(bs) => {
            out.push(T_BS);
            put_len(out, bs.len());
            for b in bs {
                put_bytes(out, b);
            }
        }
    }
}

fn put_len(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_len(out, b.len());
    out.extend_from_slice(b);
}

fn corrupt(what: &str) -> StoreError {
    StoreError::unavailable(format!("corrupt item in the database: {what}"))
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> StoreResult<u8> {
        let b = *self
            .bytes
            .get(self.pos)
            .ok_or_else(|| corrupt("truncated"))?;
        self.pos += 1;
        Ok(b)
    }

    fn len(&mut self) -> StoreResult<usize> {
        let mut n: usize = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            n |= usize::from(b & 0x7f)
                .checked_shl(shift)
                .ok_or_else(|| corrupt("length overflow"))?;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(corrupt("length overflow"))
    }

    fn raw(&mut self) -> StoreResult<&[u8]> {
        let n = self.len()?;
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| corrupt("truncated"))?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn string(&mut self) -> StoreResult<String> {
        let raw = self.raw()?;
        String::from_utf8(raw.to_vec()).map_err(|_| corrupt("invalid UTF-8"))
    }

    fn map(&mut self) -> StoreResult<HashMap<String, Value>> {
        let n = self.len()?;
        let mut map = HashMap::with_capacity(n.min(1024));
        for _ in 0..n {
            let name = self.string()?;
            let v = self.value()?;
            map.insert(name, v);
        }
        Ok(map)
    }

    fn value(&mut self) -> StoreResult<Value> {
        Ok(match self.byte()? {
            T_S => Value::S(self.string()?),
            T_N => Value::N(self.string()?),
            T_B => Value::B(self.raw()?.to_vec()),
            T_BOOL => Value::Bool(self.byte()? != 0),
            T_NULL => Value::Null(self.byte()? != 0),
            T_M => Value::M(self.map()?),
            T_L => {
                let n = self.len()?;
                let mut l = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    l.push(self.value()?);
                }
                Value::L(l)
            }
            T_SS => Value::Ss(self.strings()?),
            T_NS => Value::Ns(self.strings()?),
            T_BS => {
                let n = self.len()?;
                let mut l = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    l.push(self.raw()?.to_vec());
                }
                Value::Bs(l)
            }
            _ => return Err(corrupt("unknown value tag")),
        })
    }

    fn strings(&mut self) -> StoreResult<Vec<String>> {
        let n = self.len()?;
        let mut l = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            l.push(self.string()?);
        }
        Ok(l)
    }
}

/// Appends `s` escaped (no terminator): the prefix of every encoded part that starts
/// with `s`.
pub(crate) fn escape_into(out: &mut Vec<u8>, s: &str) {
    for b in s.bytes() {
        if b == 0 {
            out.extend_from_slice(&[0x00, 0xFF]);
        } else {
            out.push(b);
        }
    }
}

/// Appends one key part: `s` escaped, then the terminator.
pub(crate) fn push_part(out: &mut Vec<u8>, s: &str) {
    escape_into(out, s);
    out.extend_from_slice(&[0x00, 0x01]);
}

/// The encoded key of the parts, in order.
pub fn key_of(parts: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 2).sum());
    for p in parts {
        push_part(&mut out, p);
    }
    out
}

/// The smallest byte string greater than every string that starts with `prefix`, or
/// `None` when there is none (the prefix is empty or all `0xFF`).
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_round_trip_with_every_type() {
        let mut inner = HashMap::new();
        inner.insert("x".to_string(), Value::N("1.5".into()));
        let item: Item = [
            ("s", Value::S("héllo\0".into())),
            ("n", Value::N("-12".into())),
            ("b", Value::B(vec![0, 1, 255])),
            ("t", Value::Bool(true)),
            ("z", Value::Null(true)),
            ("m", Value::M(inner)),
            (
                "l",
                Value::L(vec![Value::S("a".into()), Value::Bool(false)]),
            ),
            ("ss", Value::Ss(vec!["a".into(), "b".into()])),
            ("ns", Value::Ns(vec!["1".into(), "2".into()])),
            ("bs", Value::Bs(vec![vec![1], vec![2; 300]])),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let bytes = encode_item(&item);
        assert_eq!(decode_item(&bytes).expect("decodes"), item);
        assert!(decode_item(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn encoded_keys_sort_like_tuples_of_strings() {
        let mut tuples = vec![
            ("a", "b"),
            ("a", ""),
            ("a\0", ""),
            ("a", "\0"),
            ("a", "b\0"),
            ("ab", "a"),
            ("", "zz"),
            ("a", "ba"),
            ("é", "a"),
            ("z", "a"),
        ];
        let mut keys: Vec<Vec<u8>> = tuples.iter().map(|(a, b)| key_of(&[a, b])).collect();
        tuples.sort();
        keys.sort();
        let expected: Vec<Vec<u8>> = tuples.iter().map(|(a, b)| key_of(&[a, b])).collect();
        assert_eq!(keys, expected);
    }

    #[test]
    fn prefix_end_bounds_every_extension() {
        let mut p = Vec::new();
        push_part(&mut p, "tenant");
        escape_into(&mut p, "ab");
        let end = prefix_end(&p).expect("has an end");
        let inside = key_of(&["tenant", "ab\u{10FFFF}\u{10FFFF}"]);
        let outside = key_of(&["tenant", "ac"]);
        assert!(inside.as_slice() >= p.as_slice() && inside < end);
        assert!(outside >= end);
        assert_eq!(prefix_end(&[0xFF, 0xFF]), None);
        assert_eq!(prefix_end(&[1, 0xFF]), Some(vec![2]));
    }
}
