//! DynamoDB's semantics, evaluated in memory: numbers, validation of items and keys,
//! conditions and update actions.

use std::cmp::Ordering;
use std::collections::HashSet;

use crate::ports::store::{
    Cmp, Cond, Index, Item, Key, LimitError, PK, SK, StoreError, StoreResult, TTL, Update,
    UpdateAction, Value,
};

/// Longest partition-key value DynamoDB accepts, in bytes.
const MAX_PK_BYTES: usize = 2048;
/// Longest sort-key value DynamoDB accepts, in bytes.
const MAX_SK_BYTES: usize = 1024;
/// DynamoDB numbers hold at most 38 significant digits.
const MAX_DIGITS: usize = 38;

pub(crate) fn invalid(msg: impl Into<String>) -> StoreError {
    StoreError::Limit(LimitError::Invalid(msg.into()))
}

/// An exact decimal: `0.d1 d2 d3 … × 10^exp`, no leading or trailing zero digits;
/// zero is `digits == []`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decimal {
    neg: bool,
    digits: Vec<u8>,
    exp: i64,
}

impl Decimal {
    /// Parses DynamoDB's number syntax (`-12`, `1.50`, `.5`, `1e3`), with DynamoDB's
    /// limits (38 significant digits, magnitude 1e-130 ..= 9.99…e125).
    pub(crate) fn parse(s: &str) -> Option<Decimal> {
        let bytes = s.as_bytes();
        let mut i = 0;
        let mut neg = false;
        if let Some(&c) = bytes.first()
            && (c == b'-' || c == b'+')
        {
            neg = c == b'-';
            i = 1;
        }
        let mut digits = Vec::new();
        let mut int_len: i64 = 0;
        let mut seen_point = false;
        let mut any_digit = false;
        while i < bytes.len() {
            match bytes[i] {
                c @ b'0'..=b'9' => {
                    digits.push(c - b'0');
                    any_digit = true;
                    if !seen_point {
                        int_len += 1;
                    }
                }
                b'.' if !seen_point => seen_point = true,
                b'e' | b'E' => break,
                _ => return None,
            }
            i += 1;
        }
        if !any_digit {
            return None;
        }
        let mut exp10: i64 = 0;
        if i < bytes.len() {
            // bytes[i] is 'e' or 'E'
            let rest = &s[i + 1..];
            if rest.is_empty() || rest.len() > 6 {
                return None;
            }
            exp10 = rest.parse().ok()?;
        }
        let mut exp = int_len + exp10;
        let lead = digits.iter().take_while(|d| **d == 0).count();
        digits.drain(..lead);
        exp -= lead as i64;
        while digits.last() == Some(&0) {
            digits.pop();
        }
        if digits.is_empty() {
            return Some(Decimal {
                neg: false,
                digits,
                exp: 0,
            });
        }
        if digits.len() > MAX_DIGITS || !(-129..=126).contains(&exp) {
            return None;
        }
        Some(Decimal { neg, digits, exp })
    }

    fn sign(&self) -> i8 {
        if self.digits.is_empty() {
            0
        } else if self.neg {
            -1
        } else {
            1
        }
    }

    /// The canonical text DynamoDB returns (`1.50` → `1.5`, `1e3` → `1000`).
    pub(crate) fn canonical(&self) -> String {
        if self.digits.is_empty() {
            return "0".to_string();
        }
        let ds: String = self.digits.iter().map(|d| char::from(b'0' + d)).collect();
        let n = self.digits.len() as i64;
        let body = if self.exp >= n {
            format!("{ds}{}", "0".repeat((self.exp - n) as usize))
        } else if self.exp > 0 {
            let (int, frac) = ds.split_at(self.exp as usize);
            format!("{int}.{frac}")
        } else {
            format!("0.{}{ds}", "0".repeat((-self.exp) as usize))
        };
        if self.neg { format!("-{body}") } else { body }
    }

    /// `self + delta`, exactly, or `None` when it leaves i128 range or DynamoDB's.
    pub(crate) fn add_int(&self, delta: i64) -> Option<Decimal> {
        let n = self.digits.len() as i64;
        let scale = (n - self.exp).max(0);
        let mut mantissa: i128 = 0;
        for d in &self.digits {
            mantissa = mantissa.checked_mul(10)?.checked_add(i128::from(*d))?;
        }
        for _ in 0..(self.exp - n).max(0) {
            mantissa = mantissa.checked_mul(10)?;
        }
        if self.neg {
            mantissa = -mantissa;
        }
        let mut d = i128::from(delta);
        for _ in 0..scale {
            d = d.checked_mul(10)?;
        }
        let sum = mantissa.checked_add(d)?;
        let abs = sum.unsigned_abs().to_string();
        let text = if scale == 0 {
            abs
        } else {
            let scale = scale as usize;
            let padded = format!("{abs:0>width$}", width = scale + 1);
            let (int, frac) = padded.split_at(padded.len() - scale);
            format!("{int}.{frac}")
        };
        let text = if sum < 0 { format!("-{text}") } else { text };
        Decimal::parse(&text)
    }
}

impl Ord for Decimal {
    fn cmp(&self, other: &Self) -> Ordering {
        let (a, b) = (self.sign(), other.sign());
        if a != b {
            return a.cmp(&b);
        }
        if a == 0 {
            return Ordering::Equal;
        }
        let magnitude = self
            .exp
            .cmp(&other.exp)
            .then_with(|| self.digits.cmp(&other.digits));
        if a < 0 {
            magnitude.reverse()
        } else {
            magnitude
        }
    }
}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

fn number(s: &str) -> StoreResult<Decimal> {
    Decimal::parse(s).ok_or_else(|| invalid(format!("{s:?} is not a valid DynamoDB number")))
}

/// Validates a value and puts its numbers in canonical form.
pub(crate) fn normalize_value(mut v: Value) -> StoreResult<Value> {
    normalize_in_place(&mut v)?;
    Ok(v)
}

/// [`normalize_value`] without moving the value: strings and maps are not rebuilt (a
/// profile of the CSV import found item validation rebuilding every map, rehashing every
/// attribute name, at about 7% of the runner's CPU).
fn normalize_in_place(v: &mut Value) -> StoreResult<()> {
    match v {
        Value::N(n) => {
            let c = number(n)?.canonical();
            if c != *n {
                *n = c;
            }
        }
        Value::Ns(ns) => {
            if ns.is_empty() {
                return Err(invalid("a number set may not be empty"));
            }
            let mut seen = HashSet::with_capacity(ns.len());
            for n in ns.iter_mut() {
                let c = number(n)?.canonical();
                if !seen.insert(c.clone()) {
                    return Err(invalid("a number set holds a duplicate"));
                }
                *n = c;
            }
        }
        Value::Ss(ss) => {
            let unique: HashSet<&String> = ss.iter().collect();
            if ss.is_empty() || unique.len() != ss.len() {
                return Err(invalid("a string set may not be empty or hold duplicates"));
            }
        }
        Value::Bs(bs) => {
            let unique: HashSet<&Vec<u8>> = bs.iter().collect();
            if bs.is_empty() || unique.len() != bs.len() {
                return Err(invalid("a binary set may not be empty or hold duplicates"));
            }
        }
        Value::M(m) => {
            for v in m.values_mut() {
                normalize_in_place(v)?;
            }
        }
        Value::L(l) => {
            for v in l.iter_mut() {
                normalize_in_place(v)?;
            }
        }
        Value::S(_) | Value::B(_) | Value::Bool(_) | Value::Null(_) => {}
    }
    Ok(())
}

/// Validates a key as DynamoDB does (non-empty strings within the key-size limits).
pub(crate) fn validate_key(key: &Key) -> StoreResult<()> {
    if key.pk.is_empty() || key.sk.is_empty() {
        return Err(invalid("key attributes may not be empty strings"));
    }
    if key.pk.len() > MAX_PK_BYTES || key.sk.len() > MAX_SK_BYTES {
        return Err(invalid(
            "key attribute is too long (pk ≤ 2048 bytes, sk ≤ 1024)",
        ));
    }
    Ok(())
}

/// Validates a whole item as DynamoDB would on a write: string `pk`/`sk`, index key
/// attributes (when present) non-empty strings, valid numbers and sets. Returns its key
/// and the item with canonical numbers.
pub(crate) fn validate_item(mut item: Item) -> StoreResult<(Key, Item)> {
    let key = Key::of(&item).ok_or_else(|| invalid("an item needs string pk and sk attributes"))?;
    validate_key(&key)?;
    for index in Index::ALL {
        for (attr, max) in [
            (index.pk_attr(), MAX_PK_BYTES),
            (index.sk_attr(), MAX_SK_BYTES),
        ] {
            match item.get(attr) {
                None => {}
                Some(Value::S(s)) if !s.is_empty() && s.len() <= max => {}
                Some(_) => {
                    return Err(invalid(format!(
                        "{attr} is a key of index {}: it must be a non-empty string",
                        index.name()
                    )));
                }
            }
        }
    }
    for (name, v) in item.iter_mut() {
        if name.is_empty() {
            return Err(invalid("attribute names may not be empty"));
        }
        normalize_in_place(v)?;
    }
    Ok((key, item))
}

/// True when the item's `ttl` (epoch seconds) lies in the past.
pub(crate) fn expired(item: &Item, now_secs: f64) -> bool {
    match item.get(TTL) {
        Some(Value::N(n)) => n.parse::<f64>().map(|t| t < now_secs).unwrap_or(false),
        _ => false,
    }
}

fn scalar_order(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::S(x), Value::S(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
        (Value::B(x), Value::B(y)) => Some(x.cmp(y)),
        (Value::N(x), Value::N(y)) => Some(Decimal::parse(x)?.cmp(&Decimal::parse(y)?)),
        _ => None,
    }
}

fn numbers_equal(x: &str, y: &str) -> bool {
    match (Decimal::parse(x), Decimal::parse(y)) {
        (Some(a), Some(b)) => a == b,
        _ => x == y,
    }
}

/// Deep equality with DynamoDB's meaning: numbers by value, sets without order.
pub(crate) fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::N(x), Value::N(y)) => numbers_equal(x, y),
        (Value::S(x), Value::S(y)) => x == y,
        (Value::B(x), Value::B(y)) => x == y,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Null(x), Value::Null(y)) => x == y,
        (Value::M(x), Value::M(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| values_equal(v, w)))
        }
        (Value::L(x), Value::L(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| values_equal(v, w))
        }
        (Value::Ss(x), Value::Ss(y)) => {
            x.len() == y.len() && x.iter().collect::<HashSet<_>>() == y.iter().collect()
        }
        (Value::Bs(x), Value::Bs(y)) => {
            x.len() == y.len() && x.iter().collect::<HashSet<_>>() == y.iter().collect()
        }
        (Value::Ns(x), Value::Ns(y)) => {
            x.len() == y.len() && x.iter().all(|n| y.iter().any(|m| numbers_equal(n, m)))
        }
        _ => false,
    }
}

/// Rejects a condition DynamoDB would refuse to parse (an invalid number operand).
pub(crate) fn validate_cond(cond: &Cond) -> StoreResult<()> {
    match cond {
        Cond::Compare(_, _, v) => normalize_value(v.clone()).map(|_| ()),
        Cond::And(cs) | Cond::Or(cs) => cs.iter().try_for_each(validate_cond),
        Cond::Not(c) => validate_cond(c),
        _ => Ok(()),
    }
}

/// Evaluates a condition on the item as it is (`None`: no item, or an expired one).
pub(crate) fn eval(cond: &Cond, item: Option<&Item>) -> bool {
    let attr = |name: &str| item.and_then(|i| i.get(name));
    match cond {
        Cond::ItemNotExists => item.is_none(),
        Cond::ItemExists => item.is_some(),
        Cond::AttrExists(a) => attr(a).is_some(),
        Cond::AttrNotExists(a) => attr(a).is_none(),
        Cond::Compare(a, op, v) => match attr(a) {
            None => *op == Cmp::Ne,
            Some(x) => match op {
                Cmp::Eq => values_equal(x, v),
                Cmp::Ne => !values_equal(x, v),
                Cmp::Lt => scalar_order(x, v) == Some(Ordering::Less),
                Cmp::Le => matches!(scalar_order(x, v), Some(Ordering::Less | Ordering::Equal)),
                Cmp::Gt => scalar_order(x, v) == Some(Ordering::Greater),
                Cmp::Ge => matches!(
                    scalar_order(x, v),
                    Some(Ordering::Greater | Ordering::Equal)
                ),
            },
        },
        Cond::BeginsWith(a, prefix) => {
            matches!(attr(a), Some(Value::S(s)) if s.starts_with(prefix.as_str()))
        }
        Cond::And(cs) => cs.iter().all(|c| eval(c, item)),
        Cond::Or(cs) => cs.iter().any(|c| eval(c, item)),
        Cond::Not(c) => !eval(c, item),
    }
}

fn action_attr(a: &UpdateAction) -> &str {
    match a {
        UpdateAction::Set(n, _)
        | UpdateAction::SetIfNotExists(n, _)
        | UpdateAction::Remove(n)
        | UpdateAction::Add(n, _) => n,
    }
}

/// Rejects what DynamoDB rejects in an update expression: a key attribute, an empty
/// name, two actions on one attribute, an invalid value.
pub(crate) fn validate_update(update: &Update) -> StoreResult<()> {
    let mut seen = HashSet::new();
    for a in &update.actions {
        let name = action_attr(a);
        if name == PK || name == SK {
            return Err(invalid(format!(
                "the key attribute {name} cannot be updated"
            )));
        }
        if name.is_empty() {
            return Err(invalid("attribute names may not be empty"));
        }
        if !seen.insert(name) {
            return Err(invalid(format!("two actions of one update touch {name}")));
        }
        if let UpdateAction::Set(_, v) | UpdateAction::SetIfNotExists(_, v) = a {
            normalize_value(v.clone())?;
        }
    }
    Ok(())
}

/// Applies an update to the current item (`None`: create it from the key).
pub(crate) fn apply_update(key: &Key, current: Option<Item>, update: &Update) -> StoreResult<Item> {
    let mut item = current.unwrap_or_else(|| {
        Item::from([
            (PK.to_string(), Value::S(key.pk.clone())),
            (SK.to_string(), Value::S(key.sk.clone())),
        ])
    });
    for a in &update.actions {
        match a {
            UpdateAction::Set(n, v) => {
                item.insert(n.clone(), normalize_value(v.clone())?);
            }
            UpdateAction::SetIfNotExists(n, v) => {
                if !item.contains_key(n) {
                    item.insert(n.clone(), normalize_value(v.clone())?);
                }
            }
            UpdateAction::Remove(n) => {
                item.remove(n);
            }
            UpdateAction::Add(n, delta) => {
                let next = match item.get(n) {
                    None => Decimal::parse(&delta.to_string()),
                    Some(Value::N(x)) => number(x)?.add_int(*delta),
                    Some(_) => {
                        return Err(invalid(format!(
                            "ADD needs a number, and {n} is not a number"
                        )));
                    }
                }
                .ok_or_else(|| invalid(format!("ADD on {n} leaves the range of numbers")))?;
                item.insert(n.clone(), Value::N(next.canonical()));
            }
        }
    }
    Ok(item)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::parse(s).expect("a number")
    }

    #[test]
    fn numbers_compare_by_value_exactly() {
        assert!(d("9") < d("10"));
        assert!(d("-10") < d("-9"));
        assert!(d("0.1") < d("0.11"));
        assert_eq!(d("1.50"), d("1.5"));
        assert_eq!(d("1e3"), d("1000"));
        assert_eq!(d("-0"), d("0"));
        assert!(
            d("12345678901234567890123456789012345678")
                > d("12345678901234567890123456789012345677")
        );
        assert!(Decimal::parse("abc").is_none());
        assert!(Decimal::parse("1.2.3").is_none());
        assert!(Decimal::parse("").is_none());
        assert!(Decimal::parse("1e200").is_none());
    }

    #[test]
    fn numbers_have_canonical_text() {
        assert_eq!(d("001.500").canonical(), "1.5");
        assert_eq!(d("1e3").canonical(), "1000");
        assert_eq!(d("-0.05").canonical(), "-0.05");
        assert_eq!(d("-0").canonical(), "0");
    }

    #[test]
    fn adding_integers_is_exact() {
        assert_eq!(
            d("1.5").add_int(2).map(|x| x.canonical()),
            Some("3.5".into())
        );
        assert_eq!(
            d("-1.25").add_int(1).map(|x| x.canonical()),
            Some("-0.25".into())
        );
        assert_eq!(d("0").add_int(-7).map(|x| x.canonical()), Some("-7".into()));
        assert_eq!(
            d("9007199254740993").add_int(1).map(|x| x.canonical()),
            Some("9007199254740994".into())
        );
        assert_eq!(d("1e125").add_int(1), None);
    }
}
