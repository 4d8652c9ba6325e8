//! The HTTP edge wired into an axum router exactly as the server crate does it.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::routing::get;
use oxiscale_derp::frame::Frame;
use oxiscale_derp::{DerpClient, DerpServer, KeyPair};

async fn derp_route(
    State(server): State<Arc<DerpServer>>,
    req: Request<Body>,
) -> axum::response::Response {
    oxiscale_derp::handle_derp(server, req).await.map(Body::new)
}

#[tokio::test]
async fn derp_through_an_axum_router() {
    let server = Arc::new(DerpServer::new(
        KeyPair::generate().private_bytes(),
        Arc::new(|_| true),
    ));
    let app = Router::new()
        .route("/derp", get(derp_route))
        .route(
            "/derp/probe",
            get(|| async { oxiscale_derp::probe_response() }),
        )
        .route(
            "/generate_204",
            get(|req: Request<Body>| async move { oxiscale_derp::generate_204(&req) }),
        )
        .with_state(server.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let url = format!("http://{addr}/derp");
    let mut a = DerpClient::connect(&url, KeyPair::generate().private_bytes())
        .await
        .unwrap();
    let mut b = DerpClient::connect_websocket(&url, KeyPair::generate().private_bytes())
        .await
        .unwrap();
    a.send_packet(&b.public_key(), b"via axum").await.unwrap();
    let got = tokio::time::timeout(std::time::Duration::from_secs(5), b.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        got,
        Frame::RecvPacket {
            src: a.public_key(),
            packet: bytes::Bytes::from_static(b"via axum")
        }
    );
    assert_eq!(server.stats().connections, 2);
}
