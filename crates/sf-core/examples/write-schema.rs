//! Regenerate `schema/result-record.schema.json` from the `ResultRecord` type.
fn main() -> std::io::Result<()> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../schema/result-record.schema.json"
    );
    std::fs::write(path, sf_core::record::schema_json())
}
