//! Use cases: what the product does, each a function over the ports. A reader finds
//! "what happens when X" by opening one file here.

pub mod analytics;
pub mod campaigns;
pub mod components;
pub mod contacts;
pub mod dispatch;
pub mod followup;
pub mod imports;
pub mod jobs;
pub mod lists;
pub mod messages;
pub mod minute_index;
pub mod planner;
pub mod provider_events;
pub mod providers;
pub mod reconcile;
pub mod replies;
pub mod send;
pub mod sender_health;
pub mod senders;
pub mod starter;
pub mod suppressions;
pub mod templates;
pub mod tracking;
pub mod workspaces;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::AppResult;
use crate::ports::store::{Index, Item, PK, Query, SK, Store, TTL, Value};

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

/// One page of a partition's records, decoded.
pub async fn page_of<T: DeserializeOwned>(
    store: &dyn Store,
    pk: &str,
    limit: usize,
    cursor: Option<String>,
) -> AppResult<Paged<T>> {
    let page = store
        .query(Query::partition(pk).limit(limit).cursor(cursor))
        .await?;
    Ok(Paged {
        data: page
            .items
            .into_iter()
            .map(from_item)
            .collect::<AppResult<_>>()?,
        next_cursor: page.cursor,
    })
}
