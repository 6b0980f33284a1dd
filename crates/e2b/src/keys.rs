//! API keys (the `X-API-KEY` of E2B's control plane) and the per-sandbox
//! access tokens (envd's `X-Access-Token`, the code interpreter's
//! `E2B-Traffic-Access-Token`).
//!
//! Keys come from a file, one a line, checked as the daemon checks its token
//! file. Access tokens are not stored: each is an HMAC of the sandbox id under
//! a secret derived from the keys, so a restarted daemon (or a resumed
//! sandbox) answers the same token, and no table grows with sandboxes.

use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Shortest key accepted.
pub(crate) const MIN_KEY_LEN: usize = 16;
/// Fewest distinct characters a key must have (random keys have many).
const MIN_DISTINCT: usize = 6;
/// Most keys one file may hold.
pub(crate) const MAX_KEYS: usize = 1024;
/// Words that mark a key as a template left unfilled.
const PLACEHOLDER_WORDS: &[&str] = &[
    "changeme",
    "change-me",
    "change_me",
    "placeholder",
    "yourkey",
    "your-key",
    "your_key",
    "replaceme",
    "replace-me",
    "replace_me",
    "example",
    "keyhere",
    "key-here",
    "key_here",
    "insert",
    "dummy",
];

/// An API key file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// The file cannot be read.
    #[error("cannot read the E2B API key file {path}: pass --e2b-api-keys with a readable file, one key a line")]
    Read {
        /// The path.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A key is unusable.
    #[error("E2B API key file {path}, line {line}: {why}: write random keys of at least {MIN_KEY_LEN} characters, one a line, e.g. `echo e2b_$(head -c 20 /dev/urandom | xxd -p) > {path}`")]
    Weak {
        /// The path.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        why: String,
    },
    /// No key at all.
    #[error("E2B API key file {path} holds no key: write one key a line (blank lines and `#` comments are skipped), e.g. `echo e2b_$(head -c 20 /dev/urandom | xxd -p) > {path}`")]
    Empty {
        /// The path.
        path: String,
    },
    /// Too many keys.
    #[error("E2B API key file {path} holds more than {MAX_KEYS} keys: keep at most {MAX_KEYS}")]
    TooMany {
        /// The path.
        path: String,
    },
}

/// The keys a control-plane request may carry, and the secret access tokens
/// are derived from.
#[derive(Clone)]
pub struct ApiKeys {
    keys: Vec<String>,
    secret: [u8; 32],
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys")
            .field("count", &self.keys.len())
            .finish_non_exhaustive()
    }
}

/// Why `key` is unusable, if it is.
fn weakness(key: &str) -> Option<String> {
    let lower = key.to_ascii_lowercase();
    if let Some(w) = PLACEHOLDER_WORDS.iter().find(|w| lower.contains(*w)) {
        return Some(format!("the key is a placeholder (it contains `{w}`)"));
    }
    if key.contains('<') || key.contains('>') || key.contains("${") {
        return Some("the key is a placeholder (a template such as `<key>` or `${KEY}`)".into());
    }
    if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("the key contains whitespace".into());
    }
    let n = key.chars().count();
    if n < MIN_KEY_LEN {
        return Some(format!(
            "the key is too short ({n} characters, fewer than {MIN_KEY_LEN})"
        ));
    }
    let mut distinct: Vec<char> = key.chars().collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < MIN_DISTINCT {
        return Some(format!(
            "the key is a placeholder (only {} distinct characters)",
            distinct.len()
        ));
    }
    None
}

/// Whether `key` has the shape older E2B SDKs check on the client
/// (`e2b_` and 40 hex digits).
pub fn e2b_shaped(key: &str) -> bool {
    key.strip_prefix("e2b_")
        .is_some_and(|h| h.len() == 40 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Read and check an API key file: one key a line; blank lines and lines
/// starting with `#` are skipped.
pub fn load_api_keys(path: &Path) -> Result<ApiKeys, KeysError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| KeysError::Read {
        path: p.clone(),
        source,
    })?;
    let mut keys = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let key = line.trim();
        if key.is_empty() || key.starts_with('#') {
            continue;
        }
        if let Some(why) = weakness(key) {
            return Err(KeysError::Weak {
                path: p,
                line: i + 1,
                why,
            });
        }
        if !e2b_shaped(key) {
            tracing::warn!(path = %p, line = i + 1, "an E2B API key is not `e2b_` and 40 hex digits: older E2B SDKs refuse such keys before sending them");
        }
        keys.push(key.to_string());
        if keys.len() > MAX_KEYS {
            return Err(KeysError::TooMany { path: p });
        }
    }
    if keys.is_empty() {
        return Err(KeysError::Empty { path: p });
    }
    if let Ok(md) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        if md.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %p, "the E2B API key file is readable by other users: chmod 600 it");
        }
    }
    Ok(ApiKeys::new(keys))
}

impl ApiKeys {
    /// Keys as given (checked by [`load_api_keys`], not here).
    pub fn new(keys: Vec<String>) -> ApiKeys {
        let mut h = Sha256::new();
        h.update(b"zygote-e2b access tokens v1\0");
        for k in &keys {
            h.update(k.as_bytes());
            h.update([0u8]);
        }
        ApiKeys {
            keys,
            secret: h.finalize().into(),
        }
    }

    /// Whether `given` is one of the keys (constant time in the key's bytes).
    pub fn accepts(&self, given: &str) -> bool {
        let mut ok = subtle::Choice::from(0u8);
        for k in &self.keys {
            ok |= k.as_bytes().ct_eq(given.as_bytes());
        }
        ok.into()
    }

    /// The access token of sandbox `id`.
    pub(crate) fn access_token(&self, id: &str) -> String {
        // A key of any length is valid for HMAC.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.secret) else {
            unreachable!("HMAC takes keys of any length")
        };
        mac.update(id.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Whether `given` is sandbox `id`'s access token.
    pub(crate) fn token_ok(&self, id: &str, given: &str) -> bool {
        self.access_token(id)
            .as_bytes()
            .ct_eq(given.as_bytes())
            .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "e2b_0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn key_files() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("keys");
        let refused = |text: &str, why: &str| {
            std::fs::write(&f, text).unwrap();
            let e = load_api_keys(&f).unwrap_err().to_string();
            assert!(e.contains(why), "{text:?}: {e}");
            assert!(e.contains(&f.display().to_string()), "{e}");
        };
        refused("", "holds no key");
        refused("# only a comment\n\n", "holds no key");
        refused("short\n", "line 1: the key is too short (5 characters");
        refused(
            &format!("{GOOD}\nchangeme-changeme-123\n"),
            "line 2: the key is a placeholder",
        );
        refused("xxxxxxxxxxxxxxxxxxxxxxxx\n", "only 1 distinct");
        refused("<your api key goes here>\n", "template");
        refused("abc def ghi jkl mno pqr\n", "contains whitespace");
        std::fs::write(&f, format!("# keys\n{GOOD}\n\n  Zq3v9LrT0pXw8sKd2mNf  \n")).unwrap();
        let k = load_api_keys(&f).unwrap();
        assert!(k.accepts(GOOD));
        assert!(k.accepts("Zq3v9LrT0pXw8sKd2mNf"));
        assert!(!k.accepts("Zq3v9LrT0pXw8sKd2mN"));
        assert!(!k.accepts(""));
        let e = load_api_keys(&d.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read the E2B API key file"), "{e}");
    }

    #[test]
    fn shapes_and_tokens() {
        assert!(e2b_shaped(GOOD));
        assert!(!e2b_shaped("e2b_0123"));
        assert!(!e2b_shaped("Zq3v9LrT0pXw8sKd2mNf"));
        let a = ApiKeys::new(vec![GOOD.into()]);
        let b = ApiKeys::new(vec!["Zq3v9LrT0pXw8sKd2mNf".into()]);
        let t = a.access_token("sb1");
        assert_eq!(t.len(), 64);
        assert_eq!(t, ApiKeys::new(vec![GOOD.into()]).access_token("sb1"));
        assert_ne!(t, a.access_token("sb2"));
        assert_ne!(t, b.access_token("sb1"));
        assert!(a.token_ok("sb1", &t));
        assert!(!a.token_ok("sb2", &t));
        assert!(!a.token_ok("sb1", ""));
    }
}
