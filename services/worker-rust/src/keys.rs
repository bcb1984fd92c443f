//! CURVE key files in pyzmq's zmq.auth certificate format.
//!
//! Contract: [`load_secret`] reads a `NAME.key_secret` file (our own key
//! pair) and [`load_public`] a `NAME.key` file (the forwarder's public key),
//! the files `zmqflow keys generate` and `zmq.auth.create_certificates`
//! write:
//!
//! ```text
//! #   ****  Generated on ... by pyzmq  ****
//! metadata
//! curve
//!     public-key = "<40 characters of Z85>"
//!     secret-key = "<40 characters of Z85>"
//! ```
//!
//! Read as `zmq.auth.load_certificate` reads them: `#` lines are comments,
//! the first `public-key = ...` and `secret-key = ...` lines count, quotes
//! and blanks around the value are dropped. Each key must be 40 characters
//! of Z85 (32 bytes once decoded with `zmq::z85_decode`, and encoding back
//! to the same text). Anything wrong is
//! a [`KeyFileError`] whose text names the file and the fault, in the words
//! of the Python side (src/zmqflow/security/keys.py).

use std::fmt;
use std::path::Path;

/// A CURVE key: 32 bytes, and its Z85 text as written in the key file.
#[derive(Clone, PartialEq, Eq)]
pub struct Key {
    pub bytes: [u8; 32],
    pub z85: String,
}

/// Never prints key material: a secret key must not end up in a log.
impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(..)")
    }
}

/// What a worker needs to be a CURVE client of the forwarder.
#[derive(Debug, Clone)]
pub struct CurveKeys {
    /// Our public key (its Z85 text names us in the logs).
    pub public: Key,
    pub secret: Key,
    /// The forwarder's public key.
    pub server: Key,
}

impl CurveKeys {
    /// Our key pair from `secret_file`, the forwarder's key from `server_file`.
    pub fn load(secret_file: &str, server_file: &str) -> Result<CurveKeys, KeyFileError> {
        let (public, secret) = load_secret(secret_file)?;
        let server = load_public(server_file)?;
        Ok(CurveKeys {
            public,
            secret,
            server,
        })
    }
}

/// A key file that cannot be used; the text names the file and the fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFileError(pub String);

impl fmt::Display for KeyFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KeyFileError {}

/// `(public, secret)` from a `NAME.key_secret` file.
pub fn load_secret(path: &str) -> Result<(Key, Key), KeyFileError> {
    let (public, secret) = read(path)?;
    let secret = secret.ok_or_else(|| {
        KeyFileError(format!(
            "key file {path}: no secret-key line (a public .key file? give the .key_secret file)"
        ))
    })?;
    Ok((public, secret))
}

/// The public key of a `NAME.key` (or `NAME.key_secret`) file.
pub fn load_public(path: &str) -> Result<Key, KeyFileError> {
    Ok(read(path)?.0)
}

fn read(path: &str) -> Result<(Key, Option<Key>), KeyFileError> {
    let file = Path::new(path);
    if !file.is_file() {
        let what = if file.is_dir() { " (a folder)" } else { "" };
        return Err(KeyFileError(format!("key file {path}: missing{what}")));
    }
    let text = std::fs::read(file)
        .map_err(|e| KeyFileError(format!("key file {path}: unreadable ({e})")))?;
    parse(path, &String::from_utf8_lossy(&text))
}

/// The keys of a certificate's text; `path` only names it in errors.
pub fn parse(path: &str, text: &str) -> Result<(Key, Option<Key>), KeyFileError> {
    let (mut public, mut secret) = (None, None);
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') {
            continue;
        }
        if public.is_none() && line.starts_with("public-key") {
            public = value(line);
        } else if secret.is_none() && line.starts_with("secret-key") {
            secret = value(line);
        }
        if public.is_some() && secret.is_some() {
            break;
        }
    }
    let public =
        public.ok_or_else(|| KeyFileError(format!("key file {path}: no public-key line")))?;
    let public = decode(path, "public", public)?;
    let secret = secret.map(|s| decode(path, "secret", s)).transpose()?;
    Ok((public, secret))
}

/// The text after `=`, without blanks and quotes (as pyzmq strips them).
fn value(line: &str) -> Option<&str> {
    let (_, v) = line.split_once('=')?;
    Some(v.trim_matches(|c: char| matches!(c, ' ' | '\t' | '\'' | '"')))
}

fn decode(path: &str, which: &str, text: &str) -> Result<Key, KeyFileError> {
    let count = text.chars().count();
    if count != 40 {
        return Err(KeyFileError(format!(
            "key file {path}: the {which} key is {count} characters, not 40 of Z85"
        )));
    }
    let invalid = || KeyFileError(format!("key file {path}: the {which} key is not valid Z85"));
    let bytes = zmq::z85_decode(text).map_err(|_| invalid())?;
    // zmq::z85_decode ignores libzmq's verdict on characters outside Z85 and
    // on groups past 2^32: a key is valid when it encodes back to its text.
    if zmq::z85_encode(&bytes).ok().as_deref() != Some(text) {
        return Err(invalid());
    }
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| invalid())?;
    Ok(Key {
        bytes,
        z85: text.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // A throwaway pair written by pyzmq 27.3 (zmq.auth.create_certificates(dir, "w1")),
    // kept verbatim as a vector; it protects nothing.
    const SECRET_FILE: &str = r#"#   ****  Generated on 2026-11-30 08:16:23.917054 by pyzmq  ****
#   ZeroMQ CURVE **Secret** Certificate
#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.

metadata
curve
    public-key = "3#j&k/7IPuprgKWJL=60715lFE$b?QEERwhdEt!&"
    secret-key = "jQ[1smD+lzbB$C$un>9gnL1[B1XKKo9[Zy-^uAmw"
"#;
    const PUBLIC_FILE: &str = r#"#   ****  Generated on 2026-11-30 08:16:23.917054 by pyzmq  ****
#   ZeroMQ CURVE Public Certificate
#   Exchange securely, or use a secure mechanism to verify the contents
#   of this file after exchange. Store public certificates in your home
#   directory, in the .curve subdirectory.

metadata
curve
    public-key = "3#j&k/7IPuprgKWJL=60715lFE$b?QEERwhdEt!&"
"#;
    const PUBLIC_Z85: &str = "3#j&k/7IPuprgKWJL=60715lFE$b?QEERwhdEt!&";

    fn temp(name: &str, text: &str) -> String {
        let dir = std::env::temp_dir().join(format!("zmqflow-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    }

    #[test]
    fn a_pyzmq_secret_file_gives_both_keys() {
        let (public, secret) = load_secret(&temp("w1.key_secret", SECRET_FILE)).unwrap();
        assert_eq!(public.z85, PUBLIC_Z85);
        assert_eq!(zmq::z85_encode(&public.bytes).unwrap(), PUBLIC_Z85);
        assert_eq!(secret.z85, "jQ[1smD+lzbB$C$un>9gnL1[B1XKKo9[Zy-^uAmw");
        assert_ne!(public.bytes, secret.bytes);
    }

    #[test]
    fn a_pyzmq_public_file_gives_the_public_key() {
        let public = load_public(&temp("w1.key", PUBLIC_FILE)).unwrap();
        assert_eq!(public.z85, PUBLIC_Z85);
        // and the public key of a secret file is the same key
        assert_eq!(parse("x", SECRET_FILE).unwrap().0, public);
    }

    #[test]
    fn a_public_file_given_as_our_secret_is_refused_by_name() {
        let path = temp("server.key", PUBLIC_FILE);
        let err = load_secret(&path).unwrap_err();
        assert!(err
            .0
            .starts_with(&format!("key file {path}: no secret-key line")));
    }

    #[test]
    fn missing_and_folder_and_empty_files_name_the_file() {
        assert_eq!(
            load_public("/nonexistent/forwarder.key").unwrap_err().0,
            "key file /nonexistent/forwarder.key: missing"
        );
        let dir = std::env::temp_dir().to_string_lossy().into_owned();
        assert!(load_public(&dir)
            .unwrap_err()
            .0
            .ends_with("missing (a folder)"));
        let empty = temp("empty.key", "# nothing\n");
        assert_eq!(
            load_public(&empty).unwrap_err().0,
            format!("key file {empty}: no public-key line")
        );
    }

    #[test]
    fn a_key_that_is_not_40_characters_of_z85_is_refused() {
        let short = "curve\n    public-key = \"abc\"\n";
        assert_eq!(
            parse("f.key", short).unwrap_err().0,
            "key file f.key: the public key is 3 characters, not 40 of Z85"
        );
        // 40 characters, but '~' and '"' are not Z85 ('"' is stripped only at the ends)
        let bad = "curve\n    public-key = \"~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~\"\n";
        assert_eq!(
            parse("f.key", bad).unwrap_err().0,
            "key file f.key: the public key is not valid Z85"
        );
        // '#' is Z85's last digit (84): "#####" is past 2^32
        let overflow = format!("public-key = \"{}\"\n", "#".repeat(40));
        assert_eq!(
            parse("f.key", &overflow).unwrap_err().0,
            "key file f.key: the public key is not valid Z85"
        );
        let bad_secret = SECRET_FILE.replace("jQ[1smD+", "jQ[1smD~");
        assert_eq!(
            parse("f.key_secret", &bad_secret).unwrap_err().0,
            "key file f.key_secret: the secret key is not valid Z85"
        );
    }

    #[test]
    fn single_quotes_and_no_indent_are_read_like_pyzmq() {
        let text = format!("public-key='{PUBLIC_Z85}'\n");
        assert_eq!(parse("f", &text).unwrap().0.z85, PUBLIC_Z85);
    }

    #[test]
    fn debug_never_shows_key_material() {
        let (public, secret) = parse("f", SECRET_FILE).unwrap();
        let keys = CurveKeys {
            public: public.clone(),
            secret: secret.unwrap(),
            server: public,
        };
        let shown = format!("{keys:?}");
        assert!(
            !shown.contains("jQ[1") && !shown.contains("3#j&"),
            "{shown}"
        );
    }
}
