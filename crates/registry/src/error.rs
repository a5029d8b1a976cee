//! Registry errors, shared by the backends and the model.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum RegistryError {
    #[error("registry URL {0}")]
    Address(#[from] crate::address::AddressError),
    #[error("registry backend: {0}")]
    Backend(#[from] redis::RedisError),
    #[error("registry holds a malformed record under {key}: {error}")]
    Malformed {
        key: String,
        error: serde_json::Error,
    },
}

pub type Result<T> = std::result::Result<T, RegistryError>;
