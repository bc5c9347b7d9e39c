//! CloudWatch metrics in Embedded Metric Format: one JSON line on stdout per data point,
//! which Lambda ships to CloudWatch Logs and CloudWatch turns into metrics (no API call,
//! no extra permission). Namespace `Mailpilot`, a `Function` dimension plus the caller's.
//! Only function handlers emit (the runner has no CloudWatch).

use serde_json::{Map, Value, json};

pub const NAMESPACE: &str = "Mailpilot";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
    Seconds,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
            Unit::Seconds => "Seconds",
        }
    }
}

/// The EMF line for some values under one set of dimensions.
pub fn line(function: &str, dimensions: &[(&str, &str)], values: &[(&str, f64, Unit)]) -> String {
    let mut root = Map::new();
    let mut names = vec![Value::from("Function")];
    root.insert("Function".into(), Value::from(function));
    for (k, v) in dimensions {
        names.push(Value::from(*k));
        root.insert((*k).into(), Value::from(*v));
    }
    let metrics: Vec<Value> = values
        .iter()
        .map(|(name, _, unit)| json!({"Name": name, "Unit": unit.as_str()}))
        .collect();
    for (name, value, _) in values {
        root.insert((*name).into(), json!(value));
    }
    root.insert(
        "_aws".into(),
        json!({
            "Timestamp": chrono::Utc::now().timestamp_millis(),
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [names],
                "Metrics": metrics,
            }],
        }),
    );
    Value::Object(root).to_string()
}

/// Writes values as one EMF line.
pub fn emit(function: &str, dimensions: &[(&str, &str)], values: &[(&str, f64, Unit)]) {
    println!("{}", line(function, dimensions, values));
}

/// Counts one occurrence.
pub fn count(function: &str, name: &str, dimensions: &[(&str, &str)]) {
    emit(function, dimensions, &[(name, 1.0, Unit::Count)]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_declares_its_dimensions_and_values() {
        let l: Value = serde_json::from_str(&line(
            "send",
            &[("Class", "permanent")],
            &[("Failures", 2.0, Unit::Count)],
        ))
        .unwrap();
        assert_eq!(l["Function"], "send");
        assert_eq!(l["Class"], "permanent");
        assert_eq!(l["Failures"], 2.0);
        let m = &l["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(m["Namespace"], "Mailpilot");
        assert_eq!(m["Dimensions"][0], json!(["Function", "Class"]));
        assert_eq!(
            m["Metrics"][0],
            json!({"Name": "Failures", "Unit": "Count"})
        );
    }
}
