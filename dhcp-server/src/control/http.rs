//! The optional `GET /metrics` HTTP listener, on hyper's HTTP/1 server. It knows nothing
//! of the control socket: the socket server hands it a `scrape` function that produces
//! the exposition, the shared connection limit and the stop signal. One request per
//! connection (no keep-alive), a request head of at most 8 KiB (431 past it), 5 s for the
//! whole exchange; anything but `GET /metrics` gets a 404 or 405. A scraper whose
//! address is outside `metrics-allow` gets nothing: its connection is closed before a
//! byte is read, and counted.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use super::types::ControlError;
use crate::config::ClientNet;

/// A scrape request's head is a few hundred bytes; more is not a scraper. (hyper's
/// smallest read buffer.)
const MAX_HEAD: usize = 8 * 1024;
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// Who gets in: scrapers from `allow` (the others are counted in `refused`), while one
/// of `connections` is free.
pub(super) struct Gate {
    pub allow: Vec<ClientNet>,
    pub refused: Arc<AtomicU64>,
    pub connections: Arc<Semaphore>,
}

/// Accepts scrapers until `stopped` changes, each in its own task holding one of the
/// gate's connections; `scrape` produces the text each is sent.
pub(super) async fn serve<F, Fut>(
    listener: TcpListener,
    scrape: F,
    gate: Gate,
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
            Ok((stream, from)) => {
                if !gate.allow.iter().any(|net| net.contains(from.ip())) {
                    gate.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!("metrics scraper {from} refused: not in metrics-allow");
                    continue; // dropping the stream closes it unanswered
                }
                let Ok(permit) = gate.connections.clone().try_acquire_owned() else {
                    continue; // dropping the stream closes it: the scraper retries
                };
                let scrape = scrape.clone();
                let service = service_fn(move |request| answer(request, scrape.clone()));
                let connection = http1::Builder::new()
                    .keep_alive(false)
                    .title_case_headers(true)
                    .max_buf_size(MAX_HEAD)
                    .serve_connection(TokioIo::new(stream), service);
                tokio::spawn(async move {
                    // A scraper that stalls is cut off; nothing to report to it.
                    let _ = tokio::time::timeout(HTTP_TIMEOUT, connection).await;
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

async fn answer<F, Fut>(
    request: Request<Incoming>,
    scrape: F,
) -> Result<Response<String>, Infallible>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<String, ControlError>>,
{
    let (status, content_type, body) = if request.method() != Method::GET {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".into(),
        )
    } else if request.uri().path() != "/metrics" {
        (StatusCode::NOT_FOUND, "text/plain", "try /metrics\n".into())
    } else {
        match scrape().await {
            Ok(text) => (StatusCode::OK, super::metrics::CONTENT_TYPE, text),
            Err(e) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("{e}\n"),
            ),
        }
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if status == StatusCode::METHOD_NOT_ALLOWED {
        headers.insert(ALLOW, HeaderValue::from_static("GET"));
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Serves on a loopback port with a scrape that answers `text`, or fails when it is
    /// `None`; returns what each request got back.
    async fn exchanges(text: Option<&'static str>, requests: &[String]) -> Vec<String> {
        let (replies, refused) = exchanges_from(text, requests, ClientNet::loopback()).await;
        assert_eq!(refused, 0);
        replies
    }

    /// `exchanges` for scrapers in `allow`; also returns the refusals counted.
    async fn exchanges_from(
        text: Option<&'static str>,
        requests: &[String],
        allow: Vec<ClientNet>,
    ) -> (Vec<String>, u64) {
        // 127.0.0.1 listens on every loopback address: a scraper from 127.0.0.2 reaches it.
        let listener = TcpListener::bind("0.0.0.0:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = watch::channel(false);
        let scrape = move || async move {
            text.map(str::to_owned)
                .ok_or_else(|| ControlError::Unavailable("not now".into()))
        };
        let refused = Arc::new(AtomicU64::new(0));
        let gate = Gate {
            allow,
            refused: refused.clone(),
            connections: Arc::new(Semaphore::new(4)),
        };
        let server = tokio::spawn(serve(listener, scrape, gate, stopped));
        let mut replies = Vec::new();
        for request in requests {
            let s = tokio::net::TcpSocket::new_v4().unwrap();
            s.bind("127.0.0.2:0".parse().unwrap()).unwrap();
            let mut s = s
                .connect(([127, 0, 0, 1], addr.port()).into())
                .await
                .unwrap();
            // A refused scraper may find the connection reset before or after it
            // writes: what it read is what counts.
            let _ = s.write_all(request.as_bytes()).await;
            let mut reply = String::new();
            // The server closes after one reply: reading to the end does not hang.
            let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut reply))
                .await
                .expect("the server closes the connection");
            replies.push(reply);
        }
        stop.send(true).unwrap();
        server.await.unwrap();
        (replies, refused.load(Ordering::Relaxed))
    }

    #[tokio::test]
    async fn answers_get_metrics_and_nothing_else() {
        let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(10_000));
        let got = exchanges(
            Some("dhcp_ready 1\n"),
            &[
                "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".into(),
                "GET /metrics?x=1 HTTP/1.0\r\n\r\n".into(),
                "GET / HTTP/1.1\r\n\r\n".into(),
                "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n".into(),
                huge,
            ],
        )
        .await;
        let (head, body) = got[0].split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(
            head.contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\nContent-Length: 13\r\n"), "{head}");
        assert_eq!(body, "dhcp_ready 1\n");
        assert!(got[1].contains(" 200 OK\r\n"), "{}", got[1]);
        assert!(got[1].ends_with("\r\n\r\ndhcp_ready 1\n"), "{}", got[1]);
        assert!(
            got[2].starts_with("HTTP/1.1 404 Not Found\r\n"),
            "{}",
            got[2]
        );
        assert!(
            got[3].starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{}",
            got[3]
        );
        assert!(got[3].contains("\r\nAllow: GET\r\n"), "{}", got[3]);
        assert!(got[4].starts_with("HTTP/1.1 431 "), "{}", got[4]);
    }

    #[tokio::test]
    async fn a_scraper_outside_metrics_allow_gets_nothing_and_is_counted() {
        let get = || "GET /metrics HTTP/1.1\r\n\r\n".to_owned();
        // The scrapers come from 127.0.0.2: outside 127.0.0.1/32, inside 127.0.0.0/8.
        let only_one = vec![
            "127.0.0.1".parse().unwrap(),
            "192.0.2.0/24".parse().unwrap(),
        ];
        let (got, refused) =
            exchanges_from(Some("dhcp_ready 1\n"), &[get(), get()], only_one).await;
        assert_eq!(got, ["", ""], "closed unanswered");
        assert_eq!(refused, 2);
        let (got, refused) = exchanges_from(
            Some("dhcp_ready 1\n"),
            &[get()],
            vec!["127.0.0.0/8".parse().unwrap()],
        )
        .await;
        assert!(got[0].starts_with("HTTP/1.1 200 OK\r\n"), "{}", got[0]);
        assert_eq!(refused, 0);
    }

    #[tokio::test]
    async fn a_failed_scrape_is_503() {
        let got = exchanges(None, &["GET /metrics HTTP/1.1\r\n\r\n".into()]).await;
        assert!(got[0].starts_with("HTTP/1.1 503 "), "{}", got[0]);
        assert!(got[0].ends_with("\r\n\r\nnot now\n"), "{}", got[0]);
    }
}
