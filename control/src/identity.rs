//! Node and authority identities: Ed25519 keys, their public ids, and key files.
//!
//! A key file holds one line, `dcmesh-ed25519-secret-v1 <64 hex digits>`. It is created
//! with mode 0600 and never overwritten; loading refuses a file that group or others can
//! read, as ssh does, because anyone holding the key can speak for the node.
use std::{
    fmt,
    fs::OpenOptions,
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::Path,
    str::FromStr,
};

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

/// First word of a key file (format and version tag).
pub const KEY_FILE_TAG: &str = "dcmesh-ed25519-secret-v1";

/// A node's (or authority's) public identity: its Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct NodeId(pub [u8; 32]);

impl NodeId {
    /// The first 8 hex digits, for logs and tables.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    /// The Ed25519 verifying key, if these bytes are a valid curve point.
    pub fn verifying_key(&self) -> Option<VerifyingKey> {
        VerifyingKey::from_bytes(&self.0).ok()
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.short())
    }
}

/// Why a text form of a public key was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseIdError {
    #[error("a public key is 64 hex digits, got {0} characters")]
    Length(usize),
    #[error("a public key is 64 hex digits: {0}")]
    Hex(String),
    #[error("not a valid Ed25519 public key (not a curve point)")]
    NotAPoint,
}

impl FromStr for NodeId {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.len() != 64 {
            return Err(ParseIdError::Length(s.len()));
        }
        let mut b = [0u8; 32];
        hex::decode_to_slice(s, &mut b).map_err(|e| ParseIdError::Hex(e.to_string()))?;
        let id = NodeId(b);
        id.verifying_key().ok_or(ParseIdError::NotAPoint)?;
        Ok(id)
    }
}

impl serde::Serialize for NodeId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for NodeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A secret signing key with its public id.
pub struct Identity {
    key: SigningKey,
}

/// Key file problems.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("{path}: already exists; refusing to overwrite a key (move it away first)")]
    Exists { path: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path}: mode {mode:o} lets group or others read the secret key; run \"chmod 600 {path}\""
    )]
    Permissions { path: String, mode: u32 },
    #[error("{path}: not a dcmesh key file (expected \"{KEY_FILE_TAG} <64 hex digits>\")")]
    Format { path: String },
}

impl Identity {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Self {
        Self {
            key: SigningKey::generate(&mut rand_core::OsRng),
        }
    }

    /// A key from 32 secret bytes (tests and benchmarks use fixed seeds).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// The public id.
    pub fn id(&self) -> NodeId {
        NodeId(self.key.verifying_key().to_bytes())
    }

    /// Signs `msg` (64-byte Ed25519 signature).
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.key.sign(msg).to_bytes()
    }

    /// Writes the key to a new file with mode 0600; an existing file is an error.
    pub fn write_new(&self, path: &Path) -> Result<(), KeyFileError> {
        let p = path.display().to_string();
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    KeyFileError::Exists { path: p.clone() }
                } else {
                    KeyFileError::Io {
                        path: p.clone(),
                        source: e,
                    }
                }
            })?;
        let line = format!("{KEY_FILE_TAG} {}\n", hex::encode(self.key.to_bytes()));
        f.write_all(line.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| KeyFileError::Io { path: p, source: e })
    }

    /// Reads a key file written by [`Identity::write_new`].
    pub fn load(path: &Path) -> Result<Self, KeyFileError> {
        let p = path.display().to_string();
        let io = |e| KeyFileError::Io {
            path: p.clone(),
            source: e,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyFileError::Permissions { path: p, mode });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        let mut words = text.split_whitespace();
        let (Some(KEY_FILE_TAG), Some(hexkey), None) = (words.next(), words.next(), words.next())
        else {
            return Err(KeyFileError::Format { path: p });
        };
        let mut seed = [0u8; 32];
        hex::decode_to_slice(hexkey, &mut seed).map_err(|_| KeyFileError::Format { path: p })?;
        Ok(Self::from_seed(seed))
    }
}

/// Verifies one Ed25519 signature by `id` over `msg`.
pub fn verify(id: &NodeId, msg: &[u8], sig: &[u8; 64]) -> bool {
    let Some(vk) = id.verifying_key() else {
        return false;
    };
    vk.verify_strict(msg, &ed25519_dalek::Signature::from_bytes(sig))
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("dcmesh-id-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&d);
        d
    }

    #[test]
    fn key_file_is_private_and_never_overwritten() {
        let path = tmp("a");
        let id = Identity::generate();
        id.write_new(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(Identity::load(&path).unwrap().id(), id.id());
        let err = Identity::generate().write_new(&path).unwrap_err();
        assert!(matches!(err, KeyFileError::Exists { .. }), "{err}");
        assert_eq!(Identity::load(&path).unwrap().id(), id.id(), "key changed");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            Identity::load(&path),
            Err(KeyFileError::Permissions { mode: 0o644, .. })
        ));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn garbage_key_file_is_a_format_error() {
        let path = tmp("b");
        std::fs::write(&path, "hello world\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            Identity::load(&path),
            Err(KeyFileError::Format { .. })
        ));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn node_id_text_round_trip_and_rejects() {
        let id = Identity::from_seed([7; 32]).id();
        assert_eq!(id.to_string().parse::<NodeId>().unwrap(), id);
        assert_eq!("abc".parse::<NodeId>(), Err(ParseIdError::Length(3)));
        assert!(matches!(
            "zz".repeat(32).parse::<NodeId>(),
            Err(ParseIdError::Hex(_))
        ));
    }

    #[test]
    fn signatures_verify_only_for_the_signer_and_message() {
        let a = Identity::from_seed([1; 32]);
        let b = Identity::from_seed([2; 32]);
        let sig = a.sign(b"msg");
        assert!(verify(&a.id(), b"msg", &sig));
        assert!(!verify(&b.id(), b"msg", &sig));
        assert!(!verify(&a.id(), b"msh", &sig));
    }
}
