//! The checked-in CRD YAML must equal what `crdgen` prints from the Rust types.

#[test]
fn checked_in_crd_matches_types() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../manifests/crd/chatbackends.colloquy.dev.yaml");
    let checked_in = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        checked_in == chat_controller::crd_yaml(),
        "{path} is out of date with the ChatBackend types. Regenerate it with:\n  \
         cargo run -q -p chat-controller --bin crdgen > manifests/crd/chatbackends.colloquy.dev.yaml"
    );
}
