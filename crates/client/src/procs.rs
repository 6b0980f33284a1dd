//! Background processes, terminals and directory trees of a sandbox.

use hyper::Method;
use zygote_proto::api::{
    ExecEvent, OnExpiry, ProcessStart, RenameBody, SandboxInfo, SignalBody, TimeoutBody, WalkResult,
};
use zygote_proto::procs::{ProcInfo, PtySize};

use crate::{encode_query, exec_events, full, ok, Client, ClientError};

impl Client {
    /// `GET /v1/sandboxes?metadata.K=V&state=S`: the sandboxes with every
    /// label of `labels` (and in `state`, when given).
    pub async fn list_where(
        &self,
        labels: &[(String, String)],
        state: Option<&str>,
    ) -> Result<Vec<SandboxInfo>, ClientError> {
        let mut q: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("metadata.{}={}", encode_query(k), encode_query(v)))
            .collect();
        if let Some(s) = state {
            q.push(format!("state={}", encode_query(s)));
        }
        let path = if q.is_empty() {
            "/v1/sandboxes".to_string()
        } else {
            format!("/v1/sandboxes?{}", q.join("&"))
        };
        self.json(Method::GET, &path, None::<&()>).await
    }

    /// `POST /v1/sandboxes/{id}/pause`
    pub async fn pause(&self, id: &str) -> Result<SandboxInfo, ClientError> {
        self.json(
            Method::POST,
            &format!("/v1/sandboxes/{}/pause", encode_query(id)),
            None::<&()>,
        )
        .await
    }

    /// `POST /v1/sandboxes/{id}/resume`
    pub async fn resume(&self, id: &str) -> Result<SandboxInfo, ClientError> {
        self.json(
            Method::POST,
            &format!("/v1/sandboxes/{}/resume", encode_query(id)),
            None::<&()>,
        )
        .await
    }

    /// `POST /v1/sandboxes/{id}/timeout`
    pub async fn set_timeout(
        &self,
        id: &str,
        timeout_secs: u64,
        on_expiry: Option<OnExpiry>,
    ) -> Result<SandboxInfo, ClientError> {
        self.json(
            Method::POST,
            &format!("/v1/sandboxes/{}/timeout", encode_query(id)),
            Some(&TimeoutBody {
                timeout_secs,
                on_expiry,
            }),
        )
        .await
    }

    /// `POST /v1/sandboxes/{id}/processes`
    pub async fn start_process(
        &self,
        id: &str,
        body: &ProcessStart,
    ) -> Result<ProcInfo, ClientError> {
        self.json(
            Method::POST,
            &format!("/v1/sandboxes/{}/processes", encode_query(id)),
            Some(body),
        )
        .await
    }

    /// `GET /v1/sandboxes/{id}/processes`
    pub async fn processes(&self, id: &str) -> Result<Vec<ProcInfo>, ClientError> {
        self.json(
            Method::GET,
            &format!("/v1/sandboxes/{}/processes", encode_query(id)),
            None::<&()>,
        )
        .await
    }

    /// `GET /v1/sandboxes/{id}/processes/{pid}/output`: `on_event` sees every
    /// event; the final `Exit` (or `Error`) is returned.
    pub async fn process_output(
        &self,
        id: &str,
        pid: u32,
        replay: bool,
        mut on_event: impl FnMut(&ExecEvent),
    ) -> Result<ExecEvent, ClientError> {
        let resp = self
            .json_response(
                Method::GET,
                &format!(
                    "/v1/sandboxes/{}/processes/{pid}/output?replay={replay}",
                    encode_query(id)
                ),
                None::<&()>,
            )
            .await?;
        exec_events(ok(resp).await?, &mut on_event).await
    }

    /// `POST /v1/sandboxes/{id}/processes/{pid}/stdin`
    pub async fn process_stdin(
        &self,
        id: &str,
        pid: u32,
        data: Vec<u8>,
        eof: bool,
    ) -> Result<(), ClientError> {
        let b = self
            .builder(
                Method::POST,
                &format!(
                    "/v1/sandboxes/{}/processes/{pid}/stdin?eof={eof}",
                    encode_query(id)
                ),
            )
            .header(hyper::header::CONTENT_TYPE, "application/octet-stream");
        let req = b
            .body(full(data))
            .map_err(|e| ClientError::Http(e.to_string()))?;
        ok(self.send(req).await?).await.map(|_| ())
    }

    /// `POST /v1/sandboxes/{id}/processes/{pid}/signal`
    pub async fn signal_process(&self, id: &str, pid: u32, signal: i32) -> Result<(), ClientError> {
        let _: serde_json::Value = self
            .json(
                Method::POST,
                &format!("/v1/sandboxes/{}/processes/{pid}/signal", encode_query(id)),
                Some(&SignalBody { signal }),
            )
            .await?;
        Ok(())
    }

    /// `DELETE /v1/sandboxes/{id}/processes/{pid}` (SIGKILL)
    pub async fn kill_process(&self, id: &str, pid: u32) -> Result<(), ClientError> {
        let _: serde_json::Value = self
            .json(
                Method::DELETE,
                &format!("/v1/sandboxes/{}/processes/{pid}", encode_query(id)),
                None::<&()>,
            )
            .await?;
        Ok(())
    }

    /// `POST /v1/sandboxes/{id}/processes/{pid}/resize`
    pub async fn resize_process(
        &self,
        id: &str,
        pid: u32,
        rows: u16,
        cols: u16,
    ) -> Result<(), ClientError> {
        let _: PtySize = self
            .json(
                Method::POST,
                &format!("/v1/sandboxes/{}/processes/{pid}/resize", encode_query(id)),
                Some(&PtySize { rows, cols }),
            )
            .await?;
        Ok(())
    }

    /// `POST /v1/sandboxes/{id}/files/mkdir`
    pub async fn make_dir(&self, id: &str, path: &str, parents: bool) -> Result<(), ClientError> {
        let _: serde_json::Value = self
            .json(
                Method::POST,
                &format!(
                    "/v1/sandboxes/{}/files/mkdir?path={}&parents={parents}",
                    encode_query(id),
                    encode_query(path)
                ),
                None::<&()>,
            )
            .await?;
        Ok(())
    }

    /// `POST /v1/sandboxes/{id}/files/rename`
    pub async fn rename(&self, id: &str, from: &str, to: &str) -> Result<(), ClientError> {
        let _: RenameBody = self
            .json(
                Method::POST,
                &format!("/v1/sandboxes/{}/files/rename", encode_query(id)),
                Some(&RenameBody {
                    from: from.into(),
                    to: to.into(),
                }),
            )
            .await?;
        Ok(())
    }

    /// `GET /v1/sandboxes/{id}/files/walk`
    pub async fn walk(&self, id: &str, path: &str, depth: u32) -> Result<WalkResult, ClientError> {
        self.json(
            Method::GET,
            &format!(
                "/v1/sandboxes/{}/files/walk?path={}&depth={depth}",
                encode_query(id),
                encode_query(path)
            ),
            None::<&()>,
        )
        .await
    }
}
