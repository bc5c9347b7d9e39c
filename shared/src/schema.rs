//! OpenAPI schemas for values whose rules serde's shape alone does not say, so that the
//! document states what the API accepts (and schemathesis can test exactly that).

use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::{KnownFormat, RefOr, SchemaFormat};
use utoipa::{PartialSchema, ToSchema};

/// The IANA time zone names the tz database knows, as an enum.
pub struct TimeZoneName;

impl PartialSchema for TimeZoneName {
    fn schema() -> RefOr<Schema> {
        let names: Vec<&str> = chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name()).collect();
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(names))
            .description(Some("An IANA time zone name"))
            .into()
    }
}
impl ToSchema for TimeZoneName {}

/// An IPv4 or IPv6 address.
pub struct IpAddress;

impl PartialSchema for IpAddress {
    fn schema() -> RefOr<Schema> {
        let of = |f| {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(f)))
        };
        OneOfBuilder::new()
            .item(of(KnownFormat::Ipv4))
            .item(of(KnownFormat::Ipv6))
            .into()
    }
}
impl ToSchema for IpAddress {}

/// Free attributes: names of 1 to 128 characters, any JSON values.
pub struct Attributes;

impl PartialSchema for Attributes {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property_names(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .min_length(Some(1))
                    .max_length(Some(128)),
            ))
            .description(Some("Any JSON values under names of 1 to 128 characters"))
            .into()
    }
}
impl ToSchema for Attributes {}
