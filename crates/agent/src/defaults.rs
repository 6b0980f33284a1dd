//! Exec defaults of the image: the `exec` key of `/etc/zygote/image.json`,
//! written by the image builder from an OCI image's config (`Env`,
//! `WorkingDir`, `User`). A request's own values win; images built from
//! recipes have none. Read once: children forked from a snapshot share the
//! parent's image.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde_json::Value;

const IMAGE_META: &str = "/etc/zygote/image.json";

#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Defaults {
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) cwd: Option<String>,
    pub(crate) user: Option<String>,
}

/// The image's exec defaults (empty when the file or the key is missing).
pub(crate) fn get() -> &'static Defaults {
    static DEFAULTS: OnceLock<Defaults> = OnceLock::new();
    DEFAULTS.get_or_init(|| {
        std::fs::read(IMAGE_META)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .map(|v| parse(&v["exec"]))
            .unwrap_or_default()
    })
}

fn parse(exec: &Value) -> Defaults {
    let env = exec["env"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .filter(|(k, _)| !k.is_empty() && !k.contains('=') && !k.contains('\0'))
        .collect();
    let text = |k: &str| {
        exec[k]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    Defaults {
        env,
        cwd: text("cwd"),
        // OCI's `user[:group]`: the group comes from the user's passwd entry.
        user: text("user").map(|u| u.split(':').next().unwrap_or_default().to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_exec_key() {
        let v: Value = serde_json::json!({
            "env": {"PATH": "/opt/bin:/usr/bin", "": "x", "A=B": "y"},
            "cwd": "/srv",
            "user": "app:staff"
        });
        let d = parse(&v);
        assert_eq!(d.env.len(), 1);
        assert_eq!(d.cwd.as_deref(), Some("/srv"));
        assert_eq!(d.user.as_deref(), Some("app"));
        assert_eq!(parse(&Value::Null), Defaults::default());
    }
}
