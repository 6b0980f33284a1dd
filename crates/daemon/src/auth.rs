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
    #[error("cannot read token file {path}")]
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
        why: &'static str,
    },
}

/// Read and validate a token file (first line, trimmed).
pub fn load_token(path: &Path) -> Result<String, TokenError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
        path: p.clone(),
        source,
    })?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.is_empty() {
        return Err(TokenError::Weak {
            path: p,
            why: "it is empty",
        });
    }
    if token.len() < MIN_TOKEN_LEN {
        return Err(TokenError::Weak {
            path: p,
            why: "the token is too short",
        });
    }
    let lower = token.to_ascii_lowercase();
    let placeholder = [
        "changeme",
        "change-me",
        "change_me",
        "placeholder",
        "your-token",
        "your_token",
        "replace-me",
        "example",
    ]
    .iter()
    .any(|w| lower.contains(w))
        || ["password", "secret", "token", "xxxxxxxxxxxxxxxx"]
            .iter()
            .any(|w| lower == *w)
        || token.chars().all(|c| token.starts_with(c));
    if placeholder {
        return Err(TokenError::Weak {
            path: p,
            why: "the token is a placeholder",
        });
    }
    Ok(token)
}

/// Middleware: require `Authorization: Bearer <token>`.
pub(crate) async fn require_token(
    State(token): State<Arc<String>>,
    req: Request,
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
        std::fs::write(&f, "").unwrap();
        assert!(load_token(&f).unwrap_err().to_string().contains("empty"));
        std::fs::write(&f, "short\n").unwrap();
        assert!(load_token(&f)
            .unwrap_err()
            .to_string()
            .contains("too short"));
        std::fs::write(&f, "changeme-changeme-changeme\n").unwrap();
        assert!(load_token(&f)
            .unwrap_err()
            .to_string()
            .contains("placeholder"));
        std::fs::write(&f, "aaaaaaaaaaaaaaaaaaaa\n").unwrap();
        assert!(load_token(&f)
            .unwrap_err()
            .to_string()
            .contains("placeholder"));
        std::fs::write(&f, "Zq3v9LrT0pXw8sKd2mNf\n").unwrap();
        assert_eq!(load_token(&f).unwrap(), "Zq3v9LrT0pXw8sKd2mNf");
        let _ = std::fs::remove_dir_all(&d);
    }
}
