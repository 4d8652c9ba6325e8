//! A small DERP client: plain-HTTP or WebSocket upgrade, handshake, send and receive.
//! Used by this crate's tests and by the load generator; no TLS.

use std::time::Duration;

use bytes::BytesMut;
use oxiscale_tailcfg::NodePublic;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::frame::{Frame, FrameDecoder, FrameError, MAX_PACKET_SIZE};
use crate::handshake::{ClientInfo, HandshakeError, KeyPair};
use crate::ws_stream::{WsByteStream, derp_ws_config};

/// Time allowed for TCP connect, upgrade and DERP handshake together.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_RESPONSE_HEAD: usize = 16 << 10;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("unsupported DERP URL {0:?} (want http://host:port/path)")]
    BadUrl(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("server answered HTTP {status} instead of 101: {body:?}")]
    HttpStatus { status: u16, body: String },
    #[error("malformed HTTP response: {0}")]
    BadHttpResponse(&'static str),
    #[error("WebSocket: {0}")]
    WebSocket(#[from] Box<tungstenite::Error>),
    #[error("bad frame from server: {0}")]
    Frame(#[from] FrameError),
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
    #[error("expected {expected} from server, got frame type {got:#04x}")]
    UnexpectedFrame { expected: &'static str, got: u8 },
    #[error("server refused the connection: {0}")]
    Refused(String),
    #[error("connection closed by the server")]
    Closed,
    #[error("connect did not finish within {0:?}")]
    Timeout(Duration),
    #[error("packet of {0} bytes exceeds the 64 KiB DERP limit")]
    PacketTooLarge(usize),
}

/// Any byte stream the client can run over.
pub trait DerpIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> DerpIo for T {}
type BoxedIo = Box<dyn DerpIo>;

/// A connected, handshaken DERP client.
pub struct DerpClient {
    public_key: NodePublic,
    server_key: NodePublic,
    sender: DerpSender,
    receiver: DerpReceiver,
}

/// The writing half of a client.
pub struct DerpSender {
    writer: WriteHalf<BoxedIo>,
    buf: BytesMut,
}

/// The reading half of a client.
pub struct DerpReceiver {
    reader: ReadHalf<BoxedIo>,
    decoder: FrameDecoder,
    buf: Vec<u8>,
}

impl DerpClient {
    /// Connects to `http://host:port/path` with `Upgrade: DERP` and completes the handshake.
    pub async fn connect(url: &str, private_key: [u8; 32]) -> Result<Self, ClientError> {
        with_timeout(async {
            let (host, authority, path) = parse_http_url(url)?;
            let mut stream = TcpStream::connect(&authority).await?;
            stream.set_nodelay(true)?;
            let request = format!(
                "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: oxiscale-derp-client\r\n\
                 Connection: Upgrade\r\nUpgrade: DERP\r\n\r\n"
            );
            stream.write_all(request.as_bytes()).await?;
            let leftover = read_upgrade_response(&mut stream).await?;
            Self::handshake_with(Box::new(stream), leftover, private_key).await
        })
        .await
    }

    /// Connects over WebSocket (subprotocol `derp`) to the same URL and completes the handshake.
    pub async fn connect_websocket(url: &str, private_key: [u8; 32]) -> Result<Self, ClientError> {
        with_timeout(async {
            let (_, authority, _) = parse_http_url(url)?;
            let ws_url = format!("ws://{}", &url["http://".len()..]);
            let mut request = ws_url.into_client_request().map_err(Box::new)?;
            request.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                http::HeaderValue::from_static("derp"),
            );
            let stream = TcpStream::connect(&authority).await?;
            stream.set_nodelay(true)?;
            let (ws, _response) = tokio_tungstenite::client_async_with_config(
                request,
                stream,
                Some(derp_ws_config()),
            )
            .await
            .map_err(Box::new)?;
            Self::handshake_with(Box::new(WsByteStream::new(ws)), Vec::new(), private_key).await
        })
        .await
    }

    /// Runs the DERP handshake over an already-upgraded stream.
    pub async fn handshake<IO: DerpIo + 'static>(
        io: IO,
        private_key: [u8; 32],
    ) -> Result<Self, ClientError> {
        with_timeout(Self::handshake_with(Box::new(io), Vec::new(), private_key)).await
    }

    async fn handshake_with(
        io: BoxedIo,
        already_read: Vec<u8>,
        private_key: [u8; 32],
    ) -> Result<Self, ClientError> {
        let keys = KeyPair::from_private(private_key);
        let (reader, writer) = tokio::io::split(io);
        let mut receiver = DerpReceiver {
            reader,
            decoder: FrameDecoder::new(),
            buf: vec![0u8; 32 << 10],
        };
        receiver.decoder.feed(&already_read);
        let mut sender = DerpSender {
            writer,
            buf: BytesMut::new(),
        };

        let server_key = match receiver.recv().await? {
            Frame::ServerKey { key } => NodePublic(key),
            other => {
                return Err(ClientError::UnexpectedFrame {
                    expected: "ServerKey",
                    got: other.frame_type(),
                });
            }
        };
        let sealed = keys.seal_client_info(&server_key, &ClientInfo::current());
        sender
            .send_frame(&Frame::ClientInfo {
                key: keys.public(),
                sealed: sealed.into(),
            })
            .await?;
        loop {
            match receiver.recv().await? {
                Frame::ServerInfo { sealed } => {
                    keys.open_server_info(&server_key, &sealed)?;
                    break;
                }
                Frame::Health { problem } => return Err(ClientError::Refused(problem)),
                Frame::Other { .. } | Frame::KeepAlive => {}
                other => {
                    return Err(ClientError::UnexpectedFrame {
                        expected: "ServerInfo",
                        got: other.frame_type(),
                    });
                }
            }
        }
        Ok(Self {
            public_key: keys.public(),
            server_key,
            sender,
            receiver,
        })
    }

    pub fn public_key(&self) -> NodePublic {
        self.public_key
    }

    /// The server key announced in the ServerKey frame.
    pub fn server_key(&self) -> NodePublic {
        self.server_key
    }

    pub async fn send_packet(
        &mut self,
        dst: &NodePublic,
        packet: &[u8],
    ) -> Result<(), ClientError> {
        self.sender.send_packet(dst, packet).await
    }

    pub async fn ping(&mut self, data: [u8; 8]) -> Result<(), ClientError> {
        self.sender.send_frame(&Frame::Ping { data }).await
    }

    pub async fn note_preferred(&mut self, preferred: bool) -> Result<(), ClientError> {
        self.sender
            .send_frame(&Frame::NotePreferred { preferred })
            .await
    }

    /// Writes bytes as they are, bypassing framing (for tests of server robustness).
    pub async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.sender.write_raw(bytes).await
    }

    /// The next frame from the server. Server Pings are answered with Pong and also
    /// returned. `Err(Closed)` when the server closed the connection.
    pub async fn recv(&mut self) -> Result<Frame, ClientError> {
        let frame = self.receiver.recv().await?;
        if let Frame::Ping { data } = frame {
            self.sender.send_frame(&Frame::Pong { data }).await?;
        }
        Ok(frame)
    }

    /// Separate halves for concurrent sending and receiving; the receiver does not
    /// answer server Pings by itself.
    pub fn into_split(self) -> (DerpSender, DerpReceiver) {
        (self.sender, self.receiver)
    }
}

impl DerpSender {
    pub async fn send_packet(
        &mut self,
        dst: &NodePublic,
        packet: &[u8],
    ) -> Result<(), ClientError> {
        if packet.len() > MAX_PACKET_SIZE {
            return Err(ClientError::PacketTooLarge(packet.len()));
        }
        self.send_frame(&Frame::SendPacket {
            dst: *dst,
            packet: bytes::Bytes::copy_from_slice(packet),
        })
        .await
    }

    pub async fn send_frame(&mut self, frame: &Frame) -> Result<(), ClientError> {
        self.buf.clear();
        frame.encode(&mut self.buf);
        self.writer.write_all(&self.buf).await?;
        self.writer.flush().await?;
        Ok(())
    }

    pub async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.writer.write_all(bytes).await?;
        self.writer.flush().await?;
        Ok(())
    }
}

impl DerpReceiver {
    /// The next frame; `Err(Closed)` at end of stream.
    pub async fn recv(&mut self) -> Result<Frame, ClientError> {
        loop {
            if let Some(frame) = self.decoder.next_frame()? {
                return Ok(frame);
            }
            let n = self.reader.read(&mut self.buf).await?;
            if n == 0 {
                return Err(ClientError::Closed);
            }
            self.decoder.feed(&self.buf[..n]);
        }
    }
}

async fn with_timeout<T>(
    fut: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    tokio::time::timeout(CONNECT_TIMEOUT, fut)
        .await
        .map_err(|_| ClientError::Timeout(CONNECT_TIMEOUT))?
}

/// `(host without port, host:port, path)` of an `http://` URL.
fn parse_http_url(url: &str) -> Result<(String, String, String), ClientError> {
    let bad = || ClientError::BadUrl(url.to_owned());
    let rest = url.strip_prefix("http://").ok_or_else(bad)?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/derp"),
    };
    if authority.is_empty() {
        return Err(bad());
    }
    // A trailing `]` is a bare IPv6 literal, whose colons are not a port separator.
    let (host, authority) = match authority.rsplit_once(':') {
        Some((host, port)) if !authority.ends_with(']') => {
            port.parse::<u16>().map_err(|_| bad())?;
            (host.to_owned(), authority.to_owned())
        }
        _ => (authority.to_owned(), format!("{authority}:80")),
    };
    Ok((host, authority, path.to_owned()))
}

/// Reads the response head; returns bytes that followed it (the start of the DERP stream).
async fn read_upgrade_response(stream: &mut TcpStream) -> Result<Vec<u8>, ClientError> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(pos) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        if head.len() > MAX_RESPONSE_HEAD {
            return Err(ClientError::BadHttpResponse("response head too long"));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(ClientError::BadHttpResponse(
                "connection closed in response head",
            ));
        }
        head.extend_from_slice(&chunk[..n]);
    };
    let rest = head.split_off(end);
    let text = String::from_utf8_lossy(&head);
    let status_line = text.lines().next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or(ClientError::BadHttpResponse("no status code"))?;
    if status != 101 {
        // The body is best effort: whatever arrived with the head.
        return Err(ClientError::HttpStatus {
            status,
            body: String::from_utf8_lossy(&rest).into_owned(),
        });
    }
    Ok(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_http_urls() {
        let p = |u| parse_http_url(u).unwrap();
        assert_eq!(
            p("http://127.0.0.1:3340/derp"),
            ("127.0.0.1".into(), "127.0.0.1:3340".into(), "/derp".into())
        );
        assert_eq!(
            p("http://example.com"),
            (
                "example.com".into(),
                "example.com:80".into(),
                "/derp".into()
            )
        );
        assert_eq!(
            p("http://[::1]:99/x"),
            ("[::1]".into(), "[::1]:99".into(), "/x".into())
        );
        assert_eq!(
            p("http://[::1]/x"),
            ("[::1]".into(), "[::1]:80".into(), "/x".into())
        );
        assert!(parse_http_url("https://a/derp").is_err());
        assert!(parse_http_url("http://a:notaport/derp").is_err());
        assert!(parse_http_url("http:///derp").is_err());
    }
}
