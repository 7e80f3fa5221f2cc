//! A bound web server forwards its `[[proxy]]` routes from the start: there
//! is no step between `bind` and `run` that could leave a route answering
//! 502.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(30);

/// An app server that answers every request with `200 from-app`.
async fn app_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let reply = "HTTP/1.1 200 OK\r\ncontent-length: 8\r\nconnection: close\r\n\r\nfrom-app";
                let _ = conn.write_all(reply.as_bytes()).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_proxy_route_forwards_as_soon_as_the_server_is_bound() {
    let app = app_server().await;
    let root = tempfile::tempdir().unwrap();
    let toml = format!(
        "listen = [\"127.0.0.1:0\"]\nroot = \"{}\"\nthreads = 1\naccess_log = false\n\
         [[proxy]]\nprefix = \"/api/\"\nservers = [\"{app}\"]\n",
        root.path().display()
    );
    let config: bulwark_config::web::WebConfig = bulwark_config::from_str(&toml, "web.toml").unwrap();
    let shutdown = CancellationToken::new();
    let server = bulwark_web::WebServer::bind(config, &shutdown).unwrap();
    let web = server.listeners()[0].1;
    let running = tokio::spawn(server.run(shutdown.clone()));

    let mut conn = tokio::time::timeout(DEADLINE, TcpStream::connect(web)).await.unwrap().unwrap();
    conn.write_all(b"GET /api/hello HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.unwrap();
    let mut reply = String::new();
    tokio::time::timeout(DEADLINE, conn.read_to_string(&mut reply)).await.unwrap().unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.ends_with("from-app"), "{reply}");

    shutdown.cancel();
    tokio::time::timeout(DEADLINE, running).await.unwrap().unwrap().unwrap();
}
