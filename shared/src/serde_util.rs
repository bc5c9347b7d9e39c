//! Small serde helpers for request bodies.

use serde::{Deserialize, Deserializer};

/// Tells "absent" (`None`) from "null" (`Some(None)`) in a PATCH body.
pub fn double_option<'de, T, D>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}
