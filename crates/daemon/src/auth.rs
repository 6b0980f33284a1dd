//! Bearer-token authentication for the TCP listener (constant-time compare),
//! and token-file validation.

use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// Shortest token accepted.
pub(crate) const MIN_TOKEN_LEN: usize = 16;

/// A token file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file cannot be read.
    #[error(
        "cannot read token file {path}: pass --token-file with a readable file holding the token"
    )]
    Read {
        /// The path.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The token is unusable.
    #[error("token file {path}: {why}: write a random token of at least {MIN_TOKEN_LEN} characters, e.g. `head -c 32 /dev/urandom | base64 > {path}`")]
    Weak {
        /// The path.
        path: String,
        /// What is wrong.
        why: String,
    },
}

/// Fewest distinct characters a token must have (random tokens have many).
const MIN_DISTINCT: usize = 6;

/// Words that mark a token as a template left unfilled.
const PLACEHOLDER_WORDS: &[&str] = &[
    "changeme",
    "change-me",
    "change_me",
    "placeholder",
    "yourtoken",
    "your-token",
    "your_token",
    "replaceme",
    "replace-me",
    "replace_me",
    "example",
    "tokenhere",
    "token-here",
    "token_here",
    "insert",
    "dummy",
];

/// Whole tokens that are placeholders.
const PLACEHOLDER_TOKENS: &[&str] = &["password", "secret", "token", "test", "admin"];

/// Why `token` is a placeholder, if it is one.
fn placeholder(token: &str) -> Option<String> {
    let lower = token.to_ascii_lowercase();
    if let Some(w) = PLACEHOLDER_WORDS.iter().find(|w| lower.contains(*w)) {
        return Some(format!("the token is a placeholder (it contains `{w}`)"));
    }
    if PLACEHOLDER_TOKENS.contains(&lower.as_str()) {
        return Some(format!("the token is a placeholder (`{token}`)"));
    }
    if token.contains('<') || token.contains('>') || token.contains("${") {
        return Some(
            "the token is a placeholder (a template such as `<token>` or `${TOKEN}`)".into(),
        );
    }
    None
}

/// Why `token` has too little variety to be random, if so.
fn monotonous(token: &str) -> Option<String> {
    let mut distinct: Vec<char> = token.chars().collect();
    distinct.sort_unstable();
    distinct.dedup();
    (distinct.len() < MIN_DISTINCT).then(|| {
        format!(
            "the token is a placeholder (only {} distinct characters, such as `xxxxxxxx`)",
            distinct.len()
        )
    })
}

/// Read and validate a token file (first line, trimmed).
pub fn load_token(path: &Path) -> Result<String, TokenError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
        path: p.clone(),
        source,
    })?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    let weak = |why: String| TokenError::Weak {
        path: p.clone(),
        why,
    };
    if token.is_empty() {
        return Err(weak("it is empty".into()));
    }
    if let Some(why) = placeholder(&token) {
        return Err(weak(why));
    }
    let n = token.chars().count();
    if n < MIN_TOKEN_LEN {
        return Err(weak(format!(
            "the token is too short ({n} characters, fewer than {MIN_TOKEN_LEN})"
        )));
    }
    if let Ok(md) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        if md.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %p, mode = format!("{:o}", md.permissions().mode() & 0o777), "the token file is readable by other users: chmod 600 it");
        }
    }
    if let Some(why) = monotonous(&token) {
        return Err(weak(why));
    }
    Ok(token)
}

/// A request that came without the token (only `GET /healthz` is let through
/// then, and it says nothing more than that the daemon answers).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Anonymous;

/// Middleware: require `Authorization: Bearer <token>` (`/healthz` excepted:
/// probes such as a load balancer's or Kubernetes' carry no token).
pub(crate) async fn require_token(
    State(token): State<Arc<String>>,
    mut req: Request,
    next: Next,
) -> Response {
    let given = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let ok: bool = given.as_bytes().ct_eq(token.as_bytes()).into();
    if ok {
        next.run(req).await
    } else if req.uri().path() == "/healthz" && req.method() == axum::http::Method::GET {
        req.extensions_mut().insert(Anonymous);
        next.run(req).await
    } else {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: "missing or wrong bearer token: send `Authorization: Bearer <token>` (env ZYGOTE_TOKEN for the CLI)".into(),
        }
        .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files() {
        let d = std::env::temp_dir().join(format!("zygote-token-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let f = d.join("t");
        let refused = |text: &str, why: &str| {
            std::fs::write(&f, text).unwrap();
            let e = load_token(&f).unwrap_err().to_string();
            assert!(e.contains(why), "{text:?}: {e}");
            assert!(e.contains(&f.display().to_string()), "{e}");
            assert!(e.contains("/dev/urandom"), "{e}");
        };
        refused("", "empty");
        refused("  \n\n", "empty");
        refused("short\n", "too short (5 characters");
        refused("changeme\n", "placeholder (it contains `changeme`)");
        refused("CHANGEME-changeme-changeme\n", "placeholder");
        refused("token\n", "placeholder (`token`)");
        refused("xxxxxxxxxxxxxxxxxxxxxxxx\n", "only 1 distinct");
        refused("abababababababababab\n", "only 2 distinct");
        refused("<your bearer token here>\n", "template");
        refused("${ZYGOTE_TOKEN_VALUE_123}\n", "template");
        std::fs::write(&f, "Zq3v9LrT0pXw8sKd2mNf\nsecond line ignored\n").unwrap();
        assert_eq!(load_token(&f).unwrap(), "Zq3v9LrT0pXw8sKd2mNf");
        let missing = d.join("missing");
        let e = load_token(&missing).unwrap_err().to_string();
        assert!(
            e.contains("cannot read token file") && e.contains("missing"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}
