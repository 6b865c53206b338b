//! Regenerate `schema/change-list.schema.json` from the `ChangeList` type.
fn main() -> std::io::Result<()> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../schema/change-list.schema.json"
    );
    std::fs::write(path, sf_publish::changes::schema_json())
}
