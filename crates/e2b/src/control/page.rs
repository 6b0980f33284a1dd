//! Query strings of the list routes and their paging: `limit` (1 to 100,
//! default 100) and `nextToken` (the key of the last item of the previous
//! page; the `X-Next-Token` header carries the next one).

use serde::Deserialize;

use crate::error::ApiError;

/// Most items of one page.
pub(crate) const MAX_PAGE: usize = 100;

/// The query of `GET /v2/sandboxes`, `GET /sandboxes` and `GET /snapshots`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PageQuery {
    /// `k=v&k2=v2`, URL-encoded once more.
    pub(crate) metadata: Option<String>,
    /// `running`, `paused` or both, comma-separated.
    pub(crate) state: Option<String>,
    /// `asc` (oldest first, the default) or `desc`.
    pub(crate) order: Option<String>,
    pub(crate) limit: Option<usize>,
    pub(crate) next_token: Option<String>,
    #[serde(rename = "sandboxID")]
    pub(crate) sandbox_id: Option<String>,
    pub(crate) name: Option<String>,
    /// Only sandboxes started at or after this RFC 3339 time.
    pub(crate) started_after: Option<String>,
    /// Only sandboxes started at or before this RFC 3339 time.
    pub(crate) started_before: Option<String>,
}

impl PageQuery {
    /// The `startedAfter` / `startedBefore` bounds, in Unix seconds.
    pub(crate) fn started(&self) -> Result<(i64, i64), ApiError> {
        let parse = |name: &str, v: &Option<String>, default: i64| match v.as_deref() {
            None | Some("") => Ok(default),
            Some(t) => crate::time::parse_rfc3339(t).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "{name} {t:?} is not an RFC 3339 time: pass e.g. 2026-01-02T03:04:05Z"
                ))
            }),
        };
        Ok((
            parse("startedAfter", &self.started_after, i64::MIN)?,
            parse("startedBefore", &self.started_before, i64::MAX)?,
        ))
    }

    /// The states asked for (both when none is named).
    pub(crate) fn states(&self) -> Result<Vec<&'static str>, ApiError> {
        let Some(s) = self.state.as_deref().filter(|s| !s.is_empty()) else {
            return Ok(vec!["running", "paused"]);
        };
        s.split(',')
            .map(|one| match one.trim() {
                "running" => Ok("running"),
                "paused" => Ok("paused"),
                other => Err(ApiError::bad_request(format!(
                    "state {other:?} is not a sandbox state: pass running, paused or both (comma-separated)"
                ))),
            })
            .collect()
    }
}

/// One page of `items` after `q.next_token`, and the token of the next page.
pub(crate) fn page<T>(
    items: Vec<T>,
    key: impl Fn(&T) -> &str,
    q: &PageQuery,
) -> Result<(Vec<T>, Option<String>), ApiError> {
    let limit = q.limit.unwrap_or(MAX_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit {limit} is out of range: pass 1 to {MAX_PAGE}"
        )));
    }
    let start = match q.next_token.as_deref().filter(|t| !t.is_empty()) {
        None => 0,
        Some(t) => match items.iter().position(|i| key(i) == t) {
            Some(p) => p + 1,
            None => {
                return Err(ApiError::bad_request(format!(
                    "nextToken {t:?} names nothing listed any more: list again from the start"
                )))
            }
        },
    };
    let total = items.len();
    let out: Vec<T> = items.into_iter().skip(start).take(limit).collect();
    let next = (start + out.len() < total)
        .then(|| out.last().map(|i| key(i).to_string()))
        .flatten();
    Ok((out, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages() {
        let items: Vec<String> = (0..5).map(|i| format!("s{i}")).collect();
        let q = |limit, token: Option<&str>| PageQuery {
            limit: Some(limit),
            next_token: token.map(String::from),
            ..Default::default()
        };
        let (p, n) = page(items.clone(), |s| s.as_str(), &q(2, None)).unwrap();
        assert_eq!(
            (p, n.as_deref()),
            (vec!["s0".into(), "s1".into()], Some("s1"))
        );
        let (p, n) = page(items.clone(), |s| s.as_str(), &q(2, Some("s3"))).unwrap();
        assert_eq!((p, n), (vec!["s4".to_string()], None));
        assert!(page(items.clone(), |s| s.as_str(), &q(0, None)).is_err());
        assert!(page(items, |s| s.as_str(), &q(2, Some("gone"))).is_err());
        let st = PageQuery {
            state: Some("running,paused".into()),
            ..Default::default()
        };
        assert_eq!(st.states().unwrap(), vec!["running", "paused"]);
    }
}
