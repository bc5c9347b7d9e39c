//! Use cases: what the product does, each a function over the ports. A reader finds
//! "what happens when X" by opening one file here.

pub mod contacts;
pub mod jobs;
pub mod lists;
pub mod suppressions;
pub mod workspaces;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::AppResult;
use crate::ports::store::{Index, Item, PK, SK, TTL, Value};

/// Encodes a record as an item under the given key.
pub fn to_item<T: Serialize>(pk: &str, sk: &str, record: &T) -> AppResult<Item> {
    let mut item: Item = serde_dynamo::to_item(record)?;
    item.insert(PK.into(), Value::S(pk.into()));
    item.insert(SK.into(), Value::S(sk.into()));
    Ok(item)
}

/// Decodes a record from an item, leaving out the storage attributes.
pub fn from_item<T: DeserializeOwned>(mut item: Item) -> AppResult<T> {
    for attr in [PK, SK, TTL] {
        item.remove(attr);
    }
    for index in Index::ALL {
        item.remove(index.pk_attr());
        item.remove(index.sk_attr());
    }
    Ok(serde_dynamo::from_item(item)?)
}

/// A page of records and the cursor to the next one.
#[derive(Debug)]
pub struct Paged<T> {
    pub data: Vec<T>,
    pub next_cursor: Option<String>,
}

/// Splits a slice into chunks no larger than `n` (for batch and transaction limits).
pub fn chunks<T: Clone>(items: &[T], n: usize) -> Vec<Vec<T>> {
    items.chunks(n).map(|c| c.to_vec()).collect()
}
