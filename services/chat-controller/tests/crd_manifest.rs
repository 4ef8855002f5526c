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

/// The chat API image carries its migrations version as a label (the
/// controller names migration Jobs after it); the Dockerfile's default must
/// follow `migrations/`.
#[test]
fn dockerfile_labels_the_migrations_version() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../Dockerfile");
    let text = std::fs::read_to_string(path).expect("Dockerfile");
    let default = text
        .lines()
        .find_map(|l| l.strip_prefix("ARG MIGRATIONS_VERSION="))
        .expect("ARG MIGRATIONS_VERSION=<n> in the Dockerfile");
    assert_eq!(default.trim(), colloquy_contract::MIGRATIONS_VERSION, "update the Dockerfile's ARG MIGRATIONS_VERSION");
    let label = format!("{}=\"${{MIGRATIONS_VERSION}}\"", colloquy_contract::image_labels::MIGRATIONS_VERSION);
    assert!(text.contains(&label), "the chat-api stage must set {label}");
}
