//! The optional `GET /metrics` HTTP listener. It knows nothing of the control socket: the
//! socket server hands it a `scrape` function that produces the exposition, the shared
//! connection limit and the stop signal. Deliberately minimal: one request per
//! connection, a capped header read with a timeout, no keep-alive; anything but
//! `GET /metrics` gets a 404 or 405.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use super::metrics::CONTENT_TYPE;
use super::ControlError;

/// A scrape request's head is a few hundred bytes; more is not a scraper.
const MAX_HEAD: usize = 8 * 1024;
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// Accepts scrapers until `stopped` changes, each in its own task holding one of
/// `connections`; `scrape` produces the text each is sent.
pub(super) async fn serve<F, Fut>(
    listener: TcpListener,
    scrape: F,
    connections: Arc<Semaphore>,
    mut stopped: watch::Receiver<bool>,
) where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<String, ControlError>> + Send,
{
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stopped.changed() => return,
        };
        match accepted {
            Ok((stream, _)) => {
                let Ok(permit) = connections.clone().try_acquire_owned() else {
                    continue; // dropping the stream closes it: the scraper retries
                };
                let scrape = scrape.clone();
                tokio::spawn(async move {
                    // A scraper that stalls is cut off; nothing to report to it.
                    let _ = tokio::time::timeout(HTTP_TIMEOUT, answer(stream, scrape)).await;
                    drop(permit);
                });
            }
            Err(e) => {
                tracing::warn!("metrics listener accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads the request head and answers it.
async fn answer<F, Fut>(mut stream: TcpStream, scrape: F) -> std::io::Result<()>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<String, ControlError>>,
{
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
        if head.len() > MAX_HEAD {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                "request head too large\n",
            )
            .await;
        }
    }
    let request_line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let mut parts = request_line.split(|b| *b == b' ');
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    let path = target.split(|b| *b == b'?').next().unwrap_or_default();
    if method != b"GET" {
        return respond(
            &mut stream,
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n",
        )
        .await;
    }
    if path != b"/metrics" {
        return respond(&mut stream, "404 Not Found", "text/plain", "try /metrics\n").await;
    }
    match scrape().await {
        Ok(text) => respond(&mut stream, "200 OK", CONTENT_TYPE, &text).await,
        Err(e) => {
            respond(
                &mut stream,
                "503 Service Unavailable",
                "text/plain",
                &format!("{e}\n"),
            )
            .await
        }
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}
