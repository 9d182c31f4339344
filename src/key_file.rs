//! Secret key files: the three-line hex text format shared by the cluster
//! key ([`crate::net::ClusterKey`]) and the node identity
//! ([`crate::store::Store::identity_secret`]), the owner-only permission
//! check made before a secret is read, and owner-only writes.
//!
//! ```text
//! <type line, e.g. /key/swarm/psk/1.0.0/>
//! /base16/
//! <64 hex digits: 32 bytes>
//! ```
//!
//! Each caller maps [`KeyFileError`] into its own error type, naming the
//! file and the fix.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// The second line: the only encoding supported.
pub(crate) const ENCODING_LINE: &str = "/base16/";
/// Bytes in a key.
pub(crate) const KEY_BYTES: usize = 32;
/// Largest key file read (a valid one is under 100 bytes): anything bigger
/// is not a key file, and is not read into memory.
const MAX_KEY_FILE_BYTES: u64 = 4096;

/// Why a key file could not be read; the caller adds the path.
#[derive(Debug)]
pub(crate) enum KeyFileError {
    /// The file could not be read (missing, no permission).
    Read(io::Error),
    /// The file has permission bits the caller forbids; its mode.
    Permissions(u32),
    /// Not a regular file, too big, not UTF-8, or not in the format.
    Format(String),
}

/// Read the text of the key file `path`: a regular file, under 4 KiB,
/// with none of the `forbidden` permission bits set (checked on Unix
/// before the file is read).
pub(crate) fn read_checked(path: &Path, forbidden: u32) -> Result<String, KeyFileError> {
    let meta = fs::metadata(path).map_err(KeyFileError::Read)?;
    if !meta.is_file() {
        return Err(KeyFileError::Format("not a regular file".into()));
    }
    check_mode(&meta, forbidden).map_err(KeyFileError::Permissions)?;
    if meta.len() > MAX_KEY_FILE_BYTES {
        return Err(KeyFileError::Format(format!(
            "{} bytes; a key file is under 100 bytes",
            meta.len()
        )));
    }
    let bytes = fs::read(path).map_err(KeyFileError::Read)?;
    String::from_utf8(bytes).map_err(|_| KeyFileError::Format("not UTF-8 text".into()))
}

/// `Err(mode)` if the file or directory `meta` describes has any of the
/// `forbidden` permission bits (always `Ok` off Unix).
pub(crate) fn check_mode(meta: &fs::Metadata, forbidden: u32) -> Result<(), u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & forbidden != 0 {
            return Err(mode);
        }
    }
    #[cfg(not(unix))]
    let _ = (meta, forbidden);
    Ok(())
}

/// Parse a key file's text whose first line must be `type_line`. `hint`
/// ends the error message (how to make a good file).
pub(crate) fn parse(text: &str, type_line: &str, hint: &str) -> Result<[u8; KEY_BYTES], String> {
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    let expected =
        format!("a key file has three lines: `{type_line}`, `{ENCODING_LINE}` and 64 hex digits ({hint})");
    let (key_type, encoding, hex) = match lines.as_slice() {
        [t, e, h, rest @ ..] if rest.iter().all(|l| l.is_empty()) => (*t, *e, *h),
        [_, _, _, ..] => return Err(format!("unexpected text after the key line; {expected}")),
        _ => return Err(format!("{} line(s) found; {expected}", lines.len())),
    };
    if key_type != type_line {
        return Err(format!(
            "first line is {:?}, expected `{type_line}`",
            shorten(key_type)
        ));
    }
    if encoding != ENCODING_LINE {
        return Err(format!(
            "second line is {:?}, expected `{ENCODING_LINE}` (only base16 keys are supported)",
            shorten(encoding)
        ));
    }
    if let Some((i, c)) = hex.char_indices().find(|(_, c)| !c.is_ascii_hexdigit()) {
        return Err(format!(
            "the key line has {c:?} at position {}: only hex digits 0-9, a-f are allowed",
            i + 1
        ));
    }
    if hex.len() != 2 * KEY_BYTES {
        return Err(format!(
            "the key is {} hex digits long, expected {} ({KEY_BYTES} bytes)",
            hex.len(),
            2 * KEY_BYTES
        ));
    }
    let mut bytes = [0u8; KEY_BYTES];
    for (byte, pair) in bytes.iter_mut().zip(hex.as_bytes().chunks(2)) {
        let pair = std::str::from_utf8(pair).expect("checked: ASCII hex digits");
        *byte = u8::from_str_radix(pair, 16).expect("checked: two hex digits");
    }
    Ok(bytes)
}

/// The text of a key file: `type_line`, the encoding line, the key in hex.
pub(crate) fn to_text(type_line: &str, key: &[u8; KEY_BYTES]) -> String {
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    format!("{type_line}\n{ENCODING_LINE}\n{hex}\n")
}

/// Write `text` to a new file `path`, owner-only (0600 on Unix), synced.
/// Fails if the file exists.
pub(crate) fn write_new(path: &Path, text: &str) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// Write `text` to `path` atomically: a new owner-only `<path>.tmp`,
/// synced, renamed over `path`, then the directory synced, so after a
/// crash `path` is either absent (or its old self) or complete.
pub(crate) fn write_atomic(path: &Path, text: &str) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = Path::new(&tmp);
    // A temp file left by a crash is stale (and may have other modes).
    match fs::remove_file(tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    write_new(tmp, text)?;
    fs::rename(tmp, path)?;
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// At most 40 characters of a line, for an error message.
fn shorten(line: &str) -> String {
    line.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TYPE: &str = "/key/test/1.0.0/";

    #[test]
    fn text_round_trips_and_a_wrong_type_line_is_named() {
        let key: [u8; KEY_BYTES] = std::array::from_fn(|i| (i * 7) as u8);
        let text = to_text(TYPE, &key);
        assert_eq!(parse(&text, TYPE, "hint").unwrap(), key);
        let err = parse(&text, "/key/other/", "hint").unwrap_err();
        assert!(err.contains("first line") && err.contains("/key/other/"), "{err}");
    }

    #[test]
    fn write_atomic_replaces_a_stale_temp_file_and_leaves_an_owner_only_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        fs::write(dir.path().join("k.tmp"), "stale").unwrap();
        write_atomic(&path, "one").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "one");
        assert!(!dir.path().join("k.tmp").exists());
        let meta = fs::metadata(&path).unwrap();
        check_mode(&meta, 0o077).expect("owner-only");
        assert!(write_new(&path, "two").is_err(), "write_new never overwrites");
    }
}
