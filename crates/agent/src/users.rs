//! Guest users by name, read from `/etc/passwd` (the static agent has no NSS):
//! what `user=` on an exec or a background process runs as.

use zygote_proto::agent::{AgentError, ErrorKind};

use crate::util::{bad, err};

/// A user to run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct User {
    pub(crate) name: String,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) home: String,
}

/// The user called `name` (or a numeric uid).
pub(crate) fn lookup(name: &str) -> Result<User, AgentError> {
    if name.is_empty() || name.contains(':') || name.contains('\n') {
        return Err(bad(format!("user name {name:?} is invalid")));
    }
    let passwd = std::fs::read_to_string("/etc/passwd")
        .map_err(|e| err(ErrorKind::Internal, format!("cannot read /etc/passwd: {e}")))?;
    find(&passwd, name).ok_or_else(|| {
        err(
            ErrorKind::NotFound,
            format!(
                "no user `{name}` in the guest's /etc/passwd: create it (useradd) or run as root"
            ),
        )
    })
}

fn find(passwd: &str, name: &str) -> Option<User> {
    let by_uid: Option<u32> = name.parse().ok();
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 7 {
            return None;
        }
        let uid: u32 = f[2].parse().ok()?;
        let gid: u32 = f[3].parse().ok()?;
        (f[0] == name || by_uid == Some(uid)).then(|| User {
            name: f[0].to_string(),
            uid,
            gid,
            home: if f[5].is_empty() {
                "/".into()
            } else {
                f[5].to_string()
            },
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
        daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
        broken line\n\
        user:x:1000:1000::/home/user:/bin/sh\n";

    #[test]
    fn by_name_and_by_uid() {
        let u = find(PASSWD, "user").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (1000, 1000, "/home/user"));
        assert_eq!(find(PASSWD, "1").unwrap().name, "daemon");
        assert!(find(PASSWD, "nobody").is_none());
        assert!(lookup("a:b").is_err());
    }
}
