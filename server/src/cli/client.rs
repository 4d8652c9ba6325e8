//! The CLI's connection to a running server: HTTP/1.1 over the local admin socket, or, in
//! remote mode (`cli.address`), the server's REST API with an API key.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the oxiscale server at {path}: {source} (is `oxiscale serve` running with the same configuration?)"
    )]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("talking to the server: {0}")]
    Http(String),
    #[error("remote mode (cli.address) needs an API key: set cli.api_key or OXISCALE_CLI_API_KEY")]
    NoApiKey,
    /// The server refused the request; its message is shown as is.
    #[error("{message}")]
    Refused { status: StatusCode, message: String },
}

pub struct AdminClient {
    target: Target,
}

enum Target {
    Socket(PathBuf),
    Remote {
        base: String,
        api_key: String,
        http: reqwest::Client,
    },
}

impl AdminClient {
    pub fn new(socket: &Path) -> Self {
        AdminClient {
            target: Target::Socket(socket.to_owned()),
        }
    }

    /// The REST API of the server at `base` (its URL), with `api_key`.
    pub fn remote(
        base: String,
        api_key: Option<String>,
        cli: &crate::config::CliConfig,
    ) -> Result<Self, ClientError> {
        let api_key = api_key
            .filter(|k| !k.is_empty())
            .ok_or(ClientError::NoApiKey)?;
        let http = reqwest::Client::builder()
            .timeout(cli.timeout.0)
            .danger_accept_invalid_certs(cli.insecure)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ClientError::Http(e.to_string()))?;
        Ok(AdminClient {
            target: Target::Remote {
                base,
                api_key,
                http,
            },
        })
    }

    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Result<Value, ClientError> {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Result<Value, ClientError> {
        self.call(Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Result<Value, ClientError> {
        self.call(Method::DELETE, path, None).await
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ClientError> {
        let (status, bytes) = match &self.target {
            Target::Socket(socket) => over_socket(socket, method, path, body).await?,
            Target::Remote {
                base,
                api_key,
                http,
            } => {
                let mut req = http
                    .request(method, format!("{base}{path}"))
                    .bearer_auth(api_key)
                    .header(http::header::CONTENT_TYPE, "application/json");
                if let Some(body) = body {
                    req = req.body(body.to_string());
                }
                let resp = req
                    .send()
                    .await
                    .map_err(|e| ClientError::Http(format!("{base}: {e}")))?;
                let status = resp.status();
                let bytes = resp
                    .bytes()
                    .await
                    .map_err(|e| ClientError::Http(e.to_string()))?;
                (status, bytes)
            }
        };
        answer(status, bytes)
    }
}

async fn over_socket(
    socket: &Path,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<(StatusCode, Bytes), ClientError> {
    {
        let stream = tokio::net::UnixStream::connect(socket)
            .await
            .map_err(|source| ClientError::Connect {
                path: socket.to_owned(),
                source,
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        tokio::spawn(conn);
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, "localhost")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(payload)))
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?
            .to_bytes();
        Ok((status, bytes))
    }
}

/// The server's answer as JSON, or its refusal with the message it gave.
fn answer(status: StatusCode, bytes: Bytes) -> Result<Value, ClientError> {
    {
        let value: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        if status.is_success() {
            Ok(value)
        } else {
            // grpc-gateway's `message`; `error` from servers before the headscale wire form.
            let message = value
                .get("message")
                .or_else(|| value.get("error"))
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| format!("the server answered {status}: {value}"));
            Err(ClientError::Refused { status, message })
        }
    }
}
