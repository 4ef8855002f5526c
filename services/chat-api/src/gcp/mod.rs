//! Google Cloud plumbing shared by the Vertex AI provider and the Secret
//! Manager configuration source.

pub mod metadata;
pub mod secret_manager;
