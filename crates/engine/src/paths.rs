//! Validation of values that come from users: guest paths, env names, sizes.

use crate::error::EngineError;

/// A guest path must be absolute and free of `..` components.
pub(crate) fn guest_path(path: &str) -> Result<&str, EngineError> {
    if path.is_empty() {
        return Err(EngineError::BadRequest(
            "guest path is empty: pass an absolute path such as /tmp/file".into(),
        ));
    }
    if !path.starts_with('/') {
        return Err(EngineError::BadRequest(format!(
            "guest path `{path}` is relative: pass an absolute path such as /tmp/{path}"
        )));
    }
    if path.split('/').any(|c| c == "..") {
        return Err(EngineError::BadRequest(format!(
            "guest path `{path}` contains `..`: pass an absolute path without `..` components"
        )));
    }
    if path.contains('\0') {
        return Err(EngineError::BadRequest(format!(
            "guest path {path:?} contains a NUL byte"
        )));
    }
    Ok(path)
}

/// Environment variable names: non-empty, no `=` or NUL.
pub(crate) fn env_name(name: &str) -> Result<(), EngineError> {
    if name.is_empty() || name.contains('=') || name.contains('\0') {
        return Err(EngineError::BadRequest(format!(
            "environment variable name {name:?} is invalid: use a non-empty name without `=`"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert!(guest_path("/tmp/x").is_ok());
        assert!(guest_path("/").is_ok());
        assert!(guest_path("/a/..b/c").is_ok());
        for bad in ["", "tmp/x", "/tmp/../etc", "/..", "../x"] {
            assert!(guest_path(bad).is_err(), "{bad}");
        }
        let e = guest_path("/tmp/../x").unwrap_err().to_string();
        assert!(e.contains("`/tmp/../x`") && e.contains(".."), "{e}");
    }

    #[test]
    fn env_names() {
        assert!(env_name("A_B").is_ok());
        assert!(env_name("").is_err());
        assert!(env_name("A=B").is_err());
    }
}
