//! Baseline for the import benchmark: a parse-only loop over the same file with the
//! csv crate (byte records, flexible, as the importer reads it), counting records and
//! bytes. Prints `{"records": n, "secs": s}`.

use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: csv-parse FILE"))?;
    let started = Instant::now();
    let file = std::fs::File::open(&path)?;
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .buffer_capacity(64 * 1024)
        .from_reader(std::io::BufReader::with_capacity(256 * 1024, file));
    let mut record = csv::ByteRecord::new();
    let (mut records, mut bytes) = (0u64, 0u64);
    while rdr.read_byte_record(&mut record)? {
        records += 1;
        bytes += record.as_slice().len() as u64;
    }
    println!(
        "{}",
        serde_json::json!({"records": records, "field_bytes": bytes, "secs": started.elapsed().as_secs_f64()})
    );
    Ok(())
}
