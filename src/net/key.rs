//! The cluster key: a pre-shared key that every node of a cluster holds,
//! kept in a file in libp2p's private-network (`pnet`) text format:
//!
//! ```text
//! /key/swarm/psk/1.0.0/
//! /base16/
//! <64 hex digits: 32 random bytes>
//! ```
//!
//! With a key, every TCP connection starts with the `pnet` handshake
//! (see [`crate::net::build_swarm`]): a peer without the same key never
//! gets as far as the noise handshake.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use libp2p::pnet::PreSharedKey;

use crate::key_file::{self, KeyFileError, KEY_BYTES};

/// The first line of a key file.
const KEY_TYPE_LINE: &str = "/key/swarm/psk/1.0.0/";
/// Permission bits a key file must not have: any access by other users,
/// or write access by the group (group read is allowed, for a service
/// group that runs the node).
const FORBIDDEN_MODE_BITS: u32 = 0o027;

/// A cluster key, loaded from a key file or freshly generated. Its
/// `Debug` shows only the fingerprint.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ClusterKey(PreSharedKey);

/// Why a key file could not be used or written. Nothing was started or
/// changed; the message names the file and says what to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterKeyError {
    /// The file could not be read (missing, a directory, no permission).
    #[error("cannot read cluster key file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Other users may read or change the file. Restrict it to its owner
    /// (`chmod 600`) and start again.
    #[error(
        "cluster key file {} is accessible to other users (mode {mode:03o}); \
         run `chmod 600 {}` (group read is allowed, nothing else)",
        path.display(), path.display()
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file is not a cluster key file.
    #[error("invalid cluster key file {}: {reason}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong, and what a key file looks like.
        reason: String,
    },
    /// A new key could not be made or written. Nothing was written unless
    /// the message says the file exists.
    #[error("cannot write cluster key file {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

impl ClusterKey {
    /// A new random key (from the operating system's random source).
    pub fn generate() -> io::Result<ClusterKey> {
        let mut bytes = [0u8; KEY_BYTES];
        getrandom::fill(&mut bytes).map_err(|e| io::Error::other(format!("no random source: {e}")))?;
        Ok(ClusterKey(PreSharedKey::new(bytes)))
    }

    /// Parse the text of a key file. The error says what is wrong.
    pub fn parse(text: &str) -> Result<ClusterKey, String> {
        key_file::parse(text, KEY_TYPE_LINE, "make one with `starling keygen`")
            .map(|bytes| ClusterKey(PreSharedKey::new(bytes)))
    }

    /// Read and check a key file: a regular file, not accessible to other
    /// users (on Unix), in the key file format.
    pub fn load(path: &Path) -> Result<ClusterKey, ClusterKeyError> {
        let text = key_file::read_checked(path, FORBIDDEN_MODE_BITS).map_err(|e| match e {
            KeyFileError::Read(source) => ClusterKeyError::Read {
                path: path.to_path_buf(),
                source,
            },
            KeyFileError::Permissions(mode) => ClusterKeyError::Permissions {
                path: path.to_path_buf(),
                mode,
            },
            KeyFileError::Format(reason) => ClusterKeyError::Format {
                path: path.to_path_buf(),
                reason,
            },
        })?;
        ClusterKey::parse(&text).map_err(|reason| ClusterKeyError::Format {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Write the key to a new file `path`, readable and writable by its
    /// owner only (mode 0600 on Unix). Fails if the file exists.
    pub fn write_new(&self, path: &Path) -> Result<(), ClusterKeyError> {
        key_file::write_new(path, &self.to_file_text()).map_err(|source| ClusterKeyError::Write {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The key file text (the secret itself: handle with care).
    pub fn to_file_text(&self) -> String {
        self.0.to_key_file()
    }

    /// A fingerprint of the key (16 bytes in hex, go-libp2p's): equal on
    /// nodes with the same key, and safe to log.
    pub fn fingerprint(&self) -> String {
        self.0.fingerprint().to_string()
    }

    /// The libp2p pre-shared key.
    pub(crate) fn psk(&self) -> PreSharedKey {
        self.0
    }
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterKey")
            .field("fingerprint", &self.fingerprint())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key_file::ENCODING_LINE;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn file(hex: &str) -> String {
        format!("{KEY_TYPE_LINE}\n{ENCODING_LINE}\n{hex}\n")
    }

    #[test]
    fn a_generated_key_round_trips_through_its_file_text() {
        let k = ClusterKey::generate().unwrap();
        assert_eq!(ClusterKey::parse(&k.to_file_text()).unwrap(), k);
        assert_ne!(ClusterKey::generate().unwrap(), k, "two keys differ");
    }

    #[test]
    fn a_well_formed_file_parses_with_crlf_and_uppercase_hex() {
        let k = ClusterKey::parse(&file(HEX)).unwrap();
        let crlf = file(&HEX.to_uppercase()).replace('\n', "\r\n");
        assert_eq!(ClusterKey::parse(&crlf).unwrap(), k);
        assert_eq!(k.fingerprint().len(), 32);
        assert!(!format!("{k:?}").contains(HEX), "Debug never shows the key");
    }

    #[test]
    fn bad_hex_is_refused_with_its_position() {
        let mut bad = HEX.to_string();
        bad.replace_range(9..10, "g");
        let err = ClusterKey::parse(&file(&bad)).unwrap_err();
        assert!(err.contains("'g'") && err.contains("position 10"), "{err}");
        // Multi-byte characters are refused, not sliced.
        let err = ClusterKey::parse(&file(&format!("é{}", &HEX[2..]))).unwrap_err();
        assert!(err.contains("hex digits"), "{err}");
    }

    #[test]
    fn a_key_of_the_wrong_length_is_refused() {
        let err = ClusterKey::parse(&file(&HEX[..62])).unwrap_err();
        assert!(
            err.contains("62 hex digits") && err.contains("expected 64"),
            "{err}"
        );
        let err = ClusterKey::parse(&file(&format!("{HEX}00"))).unwrap_err();
        assert!(err.contains("66 hex digits"), "{err}");
        let err = ClusterKey::parse(&file("")).unwrap_err();
        assert!(err.contains("0 hex digits"), "{err}");
    }

    #[test]
    fn a_wrong_header_is_refused_and_named() {
        let err = ClusterKey::parse(&format!("/key/swarm/psk/2.0.0/\n{ENCODING_LINE}\n{HEX}\n")).unwrap_err();
        assert!(err.contains("first line") && err.contains(KEY_TYPE_LINE), "{err}");
        let err = ClusterKey::parse(&format!("{KEY_TYPE_LINE}\n/base64/\n{HEX}\n")).unwrap_err();
        assert!(err.contains("second line") && err.contains("base16"), "{err}");
        let err = ClusterKey::parse(HEX).unwrap_err();
        assert!(
            err.contains("1 line(s)") && err.contains("starling keygen"),
            "{err}"
        );
        let err = ClusterKey::parse(&format!("{}extra\n", file(HEX))).unwrap_err();
        assert!(err.contains("after the key"), "{err}");
    }

    #[test]
    fn write_new_makes_an_owner_only_file_that_loads_and_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.key");
        let k = ClusterKey::generate().unwrap();
        k.write_new(&path).unwrap();
        assert_eq!(ClusterKey::load(&path).unwrap(), k);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let err = ClusterKey::generate().unwrap().write_new(&path).unwrap_err();
        assert!(matches!(err, ClusterKeyError::Write { .. }), "{err:?}");
        assert_eq!(ClusterKey::load(&path).unwrap(), k, "the first key is kept");
    }

    #[cfg(unix)]
    #[test]
    fn a_key_file_other_users_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.key");
        std::fs::write(&path, file(HEX)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = ClusterKey::load(&path).unwrap_err();
        assert!(
            matches!(err, ClusterKeyError::Permissions { mode: 0o644, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        ClusterKey::load(&path).expect("group read is allowed");
    }

    #[test]
    fn a_missing_or_oversized_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = ClusterKey::load(&dir.path().join("nope")).unwrap_err();
        assert!(matches!(err, ClusterKeyError::Read { .. }), "{err:?}");
        let err = ClusterKey::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'a'; 5000]).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&big, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let err = ClusterKey::load(&big).unwrap_err();
        assert!(err.to_string().contains("5000 bytes"), "{err}");
    }
}
