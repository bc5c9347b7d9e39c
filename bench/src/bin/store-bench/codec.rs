//! A copy of the embedded engine's on-disk encodings (`shared/src/adapters/local/codec.rs`,
//! which is crate-private): the tagged item format (version 1) and the order-preserving
//! key encoding. `main` checks at start-up that these give byte-identical values to what
//! the store itself writes, so the raw benchmark stores exactly what the port stores.

use std::collections::HashMap;

use mailpilot_shared::ports::store::{Item, Value};

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

/// Encodes an item (attributes sorted by name).
pub fn encode_item(item: &Item) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(FORMAT_VERSION);
    encode_map(&mut out, item);
    out
}

fn encode_map(out: &mut Vec<u8>, map: &HashMap<String, Value>) {
    let mut names: Vec<&String> = map.keys().collect();
    names.sort();
    put_len(out, names.len());
    for name in names {
        put_bytes(out, name.as_bytes());
        if let Some(v) = map.get(name) {
            encode_value(out, v);
        }
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

/// The encoded key of the parts: each part escaped (`0x00` → `0x00 0xFF`) and
/// terminated by `0x00 0x01`.
pub fn key_of(parts: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 2).sum());
    for p in parts {
        for b in p.bytes() {
            if b == 0 {
                out.extend_from_slice(&[0x00, 0xFF]);
            } else {
                out.push(b);
            }
        }
        out.extend_from_slice(&[0x00, 0x01]);
    }
    out
}
