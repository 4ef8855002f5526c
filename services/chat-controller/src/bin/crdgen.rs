//! Prints the ChatBackend CRD YAML:
//! `cargo run -p chat-controller --bin crdgen > manifests/crd/chatbackends.colloquy.dev.yaml`
fn main() {
    print!("{}", chat_controller::crd_yaml());
}
